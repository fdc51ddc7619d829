"""Entry of the omnipkgd worker runtime (the package omniworker, next to
this file).  The daemon runs

    python -E -s <dir>/worker.py worker FD [PATH...]   one worker
    python -E -s <dir>/worker.py zygote FD             a warm fork template

The channel protocol is described once, in src/proto.h.
"""

import sys

_here = sys.path[0]
from omniworker.main import main   # noqa: E402  (needs _here on sys.path)

# Jobs must not import the runtime's own files by accident (`import worker`).
if sys.path and sys.path[0] == _here:
    del sys.path[0]

sys.exit(main(sys.argv))
