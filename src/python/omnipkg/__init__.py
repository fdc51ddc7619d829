"""omnipkg: the Python client of omnipkgd, the daemon that keeps isolated,
pre-warmed Python workers, one per (package spec, interpreter).

    from omnipkg import DaemonClient
    reply = DaemonClient().execute("numpy==1.26.4", "import numpy; print(numpy.__version__)")

Stdlib only; Python 3.8+.  `omnipkg.isolation.worker_daemon` offers the same
names under the path omnipkg 3.4.1 used.
"""

from .client import (
    DaemonClient,
    DaemonConnectionError,
    DaemonNotRunning,
    DaemonProtocolError,
    DaemonStartError,
    DaemonTimeout,
    DaemonTrustError,
    default_socket_path,
    reason_class,
    start_daemon,
)

__all__ = [
    "DaemonClient",
    "DaemonConnectionError",
    "DaemonNotRunning",
    "DaemonProtocolError",
    "DaemonStartError",
    "DaemonTimeout",
    "DaemonTrustError",
    "default_socket_path",
    "reason_class",
    "start_daemon",
]
