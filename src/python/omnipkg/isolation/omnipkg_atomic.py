"""omnipkg_atomic under omnipkg 3.4.1's name: cas64(addr, expected,
desired), load64(addr), store64(addr, value) and the rest of omnipkgd's
compiled atomics (src/pyext/omnipkg_atomic.c).

    from omnipkg.isolation import omnipkg_atomic
    omnipkg_atomic.cas64(addr, 0, 1)

Importing this module puts the compiled module in its place, so this name
and `omnipkg_atomic` are one module object; omnipkg.atomics says where it
is looked for.  ImportError when it is nowhere, as omnipkg's own import
fails where no extension was built.
"""

import sys

from ..atomics import load as _load

sys.modules[__name__] = _load()
