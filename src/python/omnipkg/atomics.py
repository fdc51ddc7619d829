"""Finds and loads omnipkg_atomic, the compiled atomics and control block
calls (src/pyext/omnipkg_atomic.c): one stable-ABI module,
omnipkg_atomic.abi3.so, that every interpreter from 3.8 on loads as it is.

    from omnipkg import atomics
    oa = atomics.load()            # or: import omnipkg.isolation.omnipkg_atomic as oa
    oa.cas64_buf(mm, 0, 0, 1)

Where it is looked for, in this order (the first that loads wins):

  1. `import omnipkg_atomic` from sys.path.  In a worker that is
     <runtime dir>/worker/client/, where the daemon writes it beside this
     package; after `make install`, <libdir>/omnipkg/python/ when that
     directory is on sys.path.
  2. Beside this package: <the directory holding omnipkg/>/omnipkg_atomic.abi3.so
     (an installed package imported without its directory on sys.path).
  3. Beside the omnipkgd binary the client would start ($OMNIPKGD, else
     omnipkgd on PATH): a build tree keeps it there; for an installed
     daemon, <prefix>/lib*/omnipkg/python/ of the daemon's prefix.
  4. The runtime dir of the daemon the caller talks to (the directory of
     its socket: DaemonClient.control_block passes it; else the default
     socket's), in <runtime dir>/worker/client/, where the daemon writes it
     for its workers; used only when that directory is the caller's own
     and private, as the client requires of the socket.

Once loaded it is sys.modules["omnipkg_atomic"], so every later import of
either name gets the same module.  ImportError, naming every place looked
at, when none loads.
"""

import glob
import importlib
import importlib.machinery
import importlib.util
import os
import stat
import sys

NAME = "omnipkg_atomic"
FILE = NAME + ".abi3.so"


def _private_dir(d):
    """Whether d is a real directory of ours with no group or other bits."""
    try:
        st = os.lstat(d)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def candidates(socket_path=None):
    """The files of steps 2-4, in order (whether they exist or not)."""
    from . import client
    out = [os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), FILE)]
    daemon = client.find_daemon()
    if daemon:
        bindir = os.path.dirname(os.path.realpath(daemon))
        out.append(os.path.join(bindir, FILE))
        prefix = os.path.dirname(bindir)
        out += sorted(glob.glob(os.path.join(prefix, "lib*", "omnipkg", "python", FILE)) +
                      glob.glob(os.path.join(prefix, "lib", "*", "omnipkg", "python", FILE)))
    rt = os.path.dirname(socket_path or client.default_socket_path())
    if _private_dir(rt):
        out.append(os.path.join(rt, "worker", "client", FILE))
    seen, uniq = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            uniq.append(p)
    return uniq


def load_file(path):
    """Loads the module from path as omnipkg_atomic."""
    loader = importlib.machinery.ExtensionFileLoader(NAME, path)
    spec = importlib.util.spec_from_file_location(NAME, path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    sys.modules[NAME] = mod
    return mod


def load(socket_path=None):
    """The omnipkg_atomic module (see the order above); socket_path: the
    socket of the daemon in use, for step 4."""
    mod = sys.modules.get(NAME)
    if mod is not None:
        return mod
    tried = []
    try:
        return importlib.import_module(NAME)
    except ImportError as e:
        tried.append("sys.path (%s)" % e)
    for path in candidates(socket_path):
        if not os.path.isfile(path):
            tried.append(path + " (absent)")
            continue
        try:
            return load_file(path)
        except ImportError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("omnipkg_atomic (the compiled atomics) not found; looked at: %s"
                      % "; ".join(tried), name=NAME)
