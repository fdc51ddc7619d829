"""`from omnipkg.isolation.worker_daemon import DaemonClient` keeps working
for code written against omnipkg 3.4.1; the implementation is omnipkg.client."""

from .. import *  # noqa: F401,F403  (re-exports: the same names as omnipkg)
from .. import __all__  # noqa: F401
