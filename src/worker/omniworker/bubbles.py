"""A spec's bubble directories first on sys.path, and no module imported
from elsewhere standing in for one that a bubble provides."""

import importlib
import os
import sys


def _names(path):
    """Top-level import names a bubble directory provides."""
    names = set()
    try:
        entries = os.listdir(path)
    except OSError:
        return names
    for e in entries:
        if e.startswith(".") or e in ("__pycache__", "bin") \
                or e.endswith((".dist-info", ".egg-info", ".pth", ".data")):
            continue
        if os.path.isdir(os.path.join(path, e)):
            if e.isidentifier():
                names.add(e)
        else:
            mod = e.split(".", 1)[0]
            if e.endswith((".py", ".pyc", ".so", ".pyd")) and mod.isidentifier():
                names.add(mod)
    return names


def put_first(paths):
    """Bubbles at the front of sys.path, in the given order; a module
    already imported from elsewhere (site, a .pth file, the zygote) is
    dropped when a bubble provides its name."""
    paths = [os.path.abspath(p) for p in paths]
    for p in reversed(paths):
        while p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)
    provided = set()
    for p in paths:
        provided |= _names(p)
    for name in list(sys.modules):
        top = name.split(".", 1)[0]
        if top not in provided:
            continue
        f = getattr(sys.modules[name], "__file__", None) or ""
        if not any(f.startswith(p + os.sep) for p in paths):
            del sys.modules[name]
    for p in paths:
        sys.path_importer_cache.pop(p, None)
    importlib.invalidate_caches()
