"""omnipkg: the Python client of omnipkgd, the daemon that keeps isolated,
pre-warmed Python workers, one per (package spec, interpreter).

    from omnipkg import DaemonClient
    reply = DaemonClient().execute("numpy==1.26.4", "import numpy; print(numpy.__version__)")

Arrays move through shared segments the daemon owns (omnipkg.shm):

    x = client.empty((1024, 1024), "float32")      # mapped here and in the worker
    r = client.execute_shm("numpy==2.2.6", "arr_out[:] = arr_in * 2", {"arr_in": x},
                           {"arr_out": {"shape": x.shape, "dtype": "float32"}})

Stdlib only (numpy is imported by the calls that make arrays); Python 3.8+.  `omnipkg.isolation.worker_daemon` offers the same
names under the path omnipkg 3.4.1 used.
"""

from .client import (
    DaemonClient,
    DaemonProxy,
    DaemonConnectionError,
    DaemonNotRunning,
    DaemonProtocolError,
    DaemonShmError,
    DaemonStartError,
    DaemonTimeout,
    DaemonTrustError,
    default_socket_path,
    reason_class,
    resolve_python_exe,
    start_daemon,
)

__all__ = [
    "DaemonClient",
    "DaemonProxy",
    "DaemonConnectionError",
    "DaemonNotRunning",
    "DaemonProtocolError",
    "DaemonShmError",
    "DaemonStartError",
    "DaemonTimeout",
    "DaemonTrustError",
    "default_socket_path",
    "reason_class",
    "resolve_python_exe",
    "start_daemon",
]
