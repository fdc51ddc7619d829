"""The linker lock: why two versions of one C extension need two processes.

tests/ext/v1 and tests/ext/v2 build `lockdemo` 1.0 and 2.0: same module
name (lockdemo._core), same exported C symbol (lockdemo_answer, default
visibility, called through the PLT), answers 1 and 2.

Part 1 (no daemon) imports 1.0, drops it from sys.modules and sys.path,
puts 2.0 first and imports again, in one fresh interpreter per case, and
asserts what really happens.  Observed on CPython 3.9, 3.11 and 3.13 with
glibc 2.36:

* Separate directories, default dlopen flags (RTLD_NOW, local scope): the
  second import DOES give 2.  The path differs, so CPython's extension
  cache (keyed by name and file) misses and ld.so loads a second object;
  with RTLD_LOCAL the first copy's symbols are not in the global scope, so
  2.0's call to lockdemo_answer binds to its own definition.  Nothing is
  unloaded, though: 1.0's .so stays mapped and 1.0's module objects keep
  running 1.0's code, so the process now holds two copies of the C library
  side by side (and any shared state between them is the caller's problem).
* RTLD_GLOBAL (sys.setdlopenflags, as some packages do to share symbols
  between their extensions): 2.0's module is created (BUILD "2.0") but its
  call to lockdemo_answer binds to 1.0's already-loaded global definition,
  so lockdemo 2.0 silently answers 1.  LD_DEBUG=bindings shows the binding.
* Upgrade in place (2.0's files replace 1.0's at the same path, as
  `pip install -U` does): CPython returns the cached 1.0 module for that
  (name, file), and ld.so would return the old handle anyway because it
  matches already-loaded objects by path name; __version__ says "2.0", the
  C code is 1.0's.

Part 2 runs 1.0 and 2.0 concurrently through omnipkgd, one worker process
each, and gets 1 and 2.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# Runs inside the interpreter under test: argv = mode, v1 dir, v2 dir.
PROBE = r'''
import importlib, json, os, shutil, sys

mode, v1, v2 = sys.argv[1:4]
out = {"dlopenflags": sys.getdlopenflags()}

def snap(m):
    return {"version": m.__version__, "answer": m.answer(), "build": m._core.BUILD,
            "core_file": m._core.__file__, "bound_from": m._core.bound_from()}

def forget():
    for k in [k for k in sys.modules if k == "lockdemo" or k.startswith("lockdemo.")]:
        del sys.modules[k]

if mode == "global":
    sys.setdlopenflags(os.RTLD_NOW | os.RTLD_GLOBAL)
    out["dlopenflags"] = sys.getdlopenflags()

if mode == "inplace":
    site = sys.argv[4]
    shutil.copytree(v1, site)
    first = site
else:
    first = v1
sys.path.insert(0, first)
import lockdemo
old = lockdemo
out["first"] = snap(lockdemo)

forget()
if mode == "inplace":
    tmp = site + ".new"
    shutil.copytree(v2, tmp)
    shutil.rmtree(site)
    os.rename(tmp, site)
else:
    sys.path.remove(first)
    sys.path.insert(0, v2)
importlib.invalidate_caches()
try:
    import lockdemo
    out["second"] = snap(lockdemo)
except Exception as e:
    out["second_error"] = "%s: %s" % (type(e).__name__, e)
out["old_after"] = old.answer()
with open("/proc/self/maps") as f:
    out["mapped"] = sorted({l.split(None, 5)[5].strip() for l in f
                            if "lockdemo" in l and len(l.split(None, 5)) == 6})
print(json.dumps(out))
'''

PYTHONS = harness.find_pythons()


def _tag(xy):
    return "cp" + xy.replace(".", "")


class LinkerLockInProcess(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not PYTHONS:
            raise unittest.SkipTest("no interpreter 3.9, 3.11 or 3.13 found")
        if not shutil.which("cc"):
            raise unittest.SkipTest("no C compiler")
        cls.tmp = tempfile.mkdtemp(prefix="omnipkg-lock-")
        cls.bubbles = {}
        for xy, exe in PYTHONS.items():
            cls.bubbles[xy] = harness.build_lockdemo(exe, cls.tmp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def probe(self, xy, mode, env_extra=None):
        v1, v2 = self.bubbles[xy]
        argv = [PYTHONS[xy], "-E", "-s", "-c", PROBE, mode, v1, v2]
        if mode == "inplace":
            argv.append(tempfile.mkdtemp(dir=self.tmp) + "/site")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.update(env_extra or {})
        r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, "probe %s %s failed:\n%s" % (xy, mode, r.stderr))
        return json.loads(r.stdout.strip().splitlines()[-1])

    def check_first(self, out, v1):
        self.assertEqual(out["first"]["version"], "1.0")
        self.assertEqual(out["first"]["answer"], 1)
        self.assertEqual(out["first"]["build"], "1.0")
        self.assertTrue(out["first"]["bound_from"].startswith(v1 + os.sep), out)

    def test_separate_dirs_default_flags_loads_a_second_copy(self):
        for xy in PYTHONS:
            with self.subTest(python=xy):
                v1, v2 = self.bubbles[xy]
                out = self.probe(xy, "local")
                self.assertFalse(out["dlopenflags"] & os.RTLD_GLOBAL, out)
                self.check_first(out, v1)
                # A clean 2: a second, independent copy (see the module doc).
                self.assertNotIn("second_error", out)
                self.assertEqual(out["second"]["version"], "2.0")
                self.assertEqual(out["second"]["build"], "2.0")
                self.assertEqual(out["second"]["answer"], 2)
                self.assertTrue(out["second"]["bound_from"].startswith(v2 + os.sep), out)
                # ...but 1.0 was never unloaded: both .so files are mapped
                # and the old module still runs 1.0's C code.
                self.assertEqual(out["old_after"], 1)
                mapped = " ".join(out["mapped"])
                self.assertIn(v1 + os.sep, mapped)
                self.assertIn(v2 + os.sep, mapped)

    def test_rtld_global_binds_2_0_to_the_loaded_1_0_symbol(self):
        for xy in PYTHONS:
            with self.subTest(python=xy):
                v1, v2 = self.bubbles[xy]
                logdir = tempfile.mkdtemp(dir=self.tmp)
                out = self.probe(xy, "global", {
                    "LD_DEBUG": "bindings",
                    "LD_DEBUG_OUTPUT": os.path.join(logdir, "ld")})
                self.check_first(out, v1)
                self.assertNotIn("second_error", out)
                # Python code and module object are 2.0's...
                self.assertEqual(out["second"]["version"], "2.0")
                self.assertEqual(out["second"]["build"], "2.0")
                self.assertTrue(out["second"]["core_file"].startswith(v2 + os.sep), out)
                # ...the C call is 1.0's: the lock.
                self.assertEqual(out["second"]["answer"], 1)
                self.assertTrue(out["second"]["bound_from"].startswith(v1 + os.sep), out)
                # The dynamic linker says so itself.
                lines = []
                for name in os.listdir(logdir):
                    with open(os.path.join(logdir, name), errors="replace") as f:
                        lines += [l for l in f if "`lockdemo_answer'" in l]
                cross = [l for l in lines
                         if ("binding file " + v2 + os.sep) in l and (" to " + v1 + os.sep) in l]
                self.assertTrue(cross, "no 2.0 -> 1.0 binding in LD_DEBUG output:\n"
                                + "".join(lines))

    def test_in_place_upgrade_keeps_the_loaded_core(self):
        for xy in PYTHONS:
            with self.subTest(python=xy):
                out = self.probe(xy, "inplace")
                self.assertEqual(out["first"]["answer"], 1)
                self.assertNotIn("second_error", out)
                # Fresh Python code (2.0), stale C extension (1.0).
                self.assertEqual(out["second"]["version"], "2.0")
                self.assertEqual(out["second"]["build"], "1.0")
                self.assertEqual(out["second"]["answer"], 1)


class LinkerLockThroughDaemon(unittest.TestCase):
    """Two versions at once, each in its own worker process."""

    def setUp(self):
        why = harness.DaemonFixture.available()
        if why:
            self.skipTest(why)
        if not PYTHONS:
            self.skipTest("no interpreter 3.9, 3.11 or 3.13 found")
        self.xy = "3.11" if "3.11" in PYTHONS else sorted(PYTHONS)[-1]
        self.d = harness.DaemonFixture()
        self.addCleanup(self._stop)  # runs even when start() fails
        harness.build_lockdemo(PYTHONS[self.xy], self.d.home)
        self.d.start()

    def _stop(self):
        problems = self.d.stop()
        if problems:
            self.fail("daemon teardown:\n" + "\n".join(problems))

    def test_concurrent_versions(self):
        code = "import lockdemo; print(lockdemo.answer())"
        procs = {v: self.d.cli_popen("exec", "--spec", "lockdemo==" + v,
                                     "--python", self.xy, "-c", code)
                 for v in ("1.0", "2.0")}
        results = {}
        for v, p in procs.items():
            try:
                out, err = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                self.fail("exec lockdemo==%s timed out\n%s" % (v, self.d.log_tail()))
            results[v] = (p.returncode, out, err)
        for v, want in (("1.0", "1"), ("2.0", "2")):
            rc, out, err = results[v]
            self.assertEqual(rc, 0, "exec lockdemo==%s: rc %d\nstdout: %s\nstderr: %s"
                             % (v, rc, out, err))
            self.assertEqual(out.strip(), want, "lockdemo==%s\nstderr: %s" % (v, err))


if __name__ == "__main__":
    unittest.main()
