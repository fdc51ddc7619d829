"""`from omnipkg.isolation.worker_daemon import DaemonClient` keeps working
for code written against omnipkg 3.4.1; the implementation is omnipkg.client."""

from ..client import (  # noqa: F401  (re-exports)
    DaemonClient,
    DaemonConnectionError,
    DaemonNotRunning,
    DaemonProtocolError,
    DaemonStartError,
    DaemonTimeout,
    default_socket_path,
    start_daemon,
)

__all__ = [
    "DaemonClient",
    "DaemonConnectionError",
    "DaemonNotRunning",
    "DaemonProtocolError",
    "DaemonStartError",
    "DaemonTimeout",
    "default_socket_path",
    "start_daemon",
]
