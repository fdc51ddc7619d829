"""Interpreter names, virtual environments and unpinned specs, end to end.

Each test starts its own daemon on a private runtime dir and home
(harness.DaemonFixture) with the numpy 1.26.4 and 2.2.6 bubbles for
Python 3.11 linked in from the real home (scripts/bubbles.sh), and runs
jobs through the CLI of the build:

    $ omnipkg exec --json --spec 'numpy>=1.26' --python 3.11 -c '...'
    {"ok": true, "spec": "numpy==2.2.6", ...}

Under CI=true a missing bubble or interpreter fails instead of skips.
"""

import json
import os
import subprocess
import unittest

import harness

PY = harness.find_pythons(("3.11",))
REAL_HOME = os.environ.get("OMNIPKG_HOME") or os.path.join(
    os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "omnipkg")
NUMPY_CODE = "import numpy; result = [numpy.__version__, numpy.__file__]"


class InterpSpecTest(unittest.TestCase):
    def setUp(self):
        why = harness.DaemonFixture.available()
        if not why and "3.11" not in PY:
            why = "python 3.11 not installed"
        for v in ("1.26.4", "2.2.6"):
            src = os.path.join(REAL_HOME, "bubbles", "cp311", "numpy-" + v)
            if not why and not os.path.isdir(src):
                why = "bubble numpy==%s for 3.11 missing (scripts/bubbles.sh)" % v
        if why:
            if os.environ.get("CI") == "true":
                self.fail(why)
            self.skipTest(why)
        self.py = PY["3.11"]
        self.d = harness.DaemonFixture()
        tagdir = os.path.join(self.d.home, "bubbles", "cp311")
        os.makedirs(tagdir)
        for v in ("1.26.4", "2.2.6"):
            os.symlink(os.path.join(REAL_HOME, "bubbles", "cp311", "numpy-" + v),
                       os.path.join(tagdir, "numpy-" + v))
        self.d.start()

    def tearDown(self):
        problems = self.d.stop()
        self.assertEqual(problems, [])

    def exec_json(self, spec, python, code):
        r = self.d.cli("exec", "--json", "--spec", spec, "--python", python, "-c", code)
        self.assertTrue(r.stdout, "no reply: rc %d, stderr %s" % (r.returncode, r.stderr))
        return r.returncode, json.loads(r.stdout)

    def assert_numpy(self, spec, python, version):
        """Runs numpy under spec; asserts it is version from its bubble.
        Returns the reply."""
        rc, r = self.exec_json(spec, python, NUMPY_CODE)
        self.assertEqual(rc, 0, r)
        got, path = r["result"]
        self.assertEqual(got, version, "%s on %s" % (spec, python))
        bubble = os.path.realpath(os.path.join(self.d.home, "bubbles", "cp311", "numpy-" + version))
        self.assertTrue(os.path.realpath(path).startswith(bubble + os.sep),
                        "%s not in %s" % (path, bubble))
        return r

    def base_has_numpy(self):
        """Can the 3.11 interpreter import numpy by itself (as a worker
        runs it, -E -s)?"""
        return subprocess.run([self.py, "-E", "-s", "-c", "import numpy"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=60).returncode == 0


class TestVenv(InterpSpecTest):
    def make_venv(self):
        venv = os.path.join(self.d.tmp, "venv")
        r = subprocess.run([self.py, "-m", "venv", "--without-pip", venv],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout)
        site = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                               "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              text=True, timeout=60).stdout.strip()
        self.assertTrue(site.startswith(venv + os.sep), site)
        with open(os.path.join(site, "omni_venv_marker.py"), "w") as f:
            f.write("WHERE = 'venv'\n")
        return venv

    def test_venv_site_packages_are_seen(self):
        venv = self.make_venv()
        vpy = os.path.join(venv, "bin", "python")
        code = "import omni_venv_marker, sys; print(sys.prefix)"

        rc, r = self.exec_json("base", vpy, code)
        self.assertEqual(rc, 0, r)
        self.assertEqual(os.path.realpath(r["stdout"].strip()), os.path.realpath(venv))
        self.assertEqual(r["python"], vpy, "the venv's path, as given")
        self.assertEqual(r["python_version"].rsplit(".", 1)[0], "3.11")

        rc, b = self.exec_json("base", self.py, code)
        self.assertEqual(rc, 1, b)
        self.assertEqual(b["reason"], "exception")
        self.assertIn("ModuleNotFoundError", b["error"])
        self.assertNotEqual(b["worker_pid"], r["worker_pid"], "the venv has its own worker")

        # The same through a short name: the discovered base, not the venv.
        rc, s = self.exec_json("base", "3.11", code)
        self.assertEqual(rc, 1, s)

    def test_bubble_before_venv(self):
        venv = self.make_venv()
        vpy = os.path.join(venv, "bin", "python")
        r = self.assert_numpy("numpy==1.26.4", vpy, "1.26.4")
        self.assertEqual(r["python"], vpy)
        rc, m = self.exec_json("numpy==1.26.4", vpy,
                               "import omni_venv_marker, numpy; result = omni_venv_marker.WHERE")
        self.assertEqual((rc, m["result"]), (0, "venv"), m)
        self.assertEqual(m["worker_pid"], r["worker_pid"])


class TestNames(InterpSpecTest):
    def test_short_names_share_one_worker(self):
        pids = set()
        for name in ("3.11", "py311", "python3.11"):
            rc, r = self.exec_json("base", name, "import sys; result = list(sys.version_info[:2])")
            self.assertEqual((rc, r["result"]), (0, [3, 11]), r)
            pids.add(r["worker_pid"])
        self.assertEqual(len(pids), 1, "one interpreter by three names")

    def test_python3_is_a_3x(self):
        rc, r = self.exec_json("base", "python3", "import sys; result = sys.version_info[0]")
        self.assertEqual((rc, r["result"]), (0, 3), r)

    def test_bad_names_list_the_forms(self):
        for name in ("py", "py3", "python", "python3.x", "py3111111", "3.11.", "../3.11"):
            rc, r = self.exec_json("base", name, "pass")
            self.assertEqual((rc, r["reason"]), (2, "nopython"), name)
            self.assertIn("give 3.11, 3.11.7, py311, python3.11, python3 or an absolute path",
                          r["error"])
            self.assertIn("available: ", r["error"])


class TestUnpinned(InterpSpecTest):
    def test_newest_allowed_bubble(self):
        r = self.assert_numpy("numpy>=1.26", "3.11", "2.2.6")
        self.assertEqual(r["spec"], "numpy==2.2.6")
        same = self.assert_numpy("numpy==2.2.6", "3.11", "2.2.6")
        self.assertEqual(same["worker_pid"], r["worker_pid"], "one worker for one resolved spec")
        bare = self.assert_numpy("numpy", "3.11", "2.2.6")
        self.assertEqual(bare["worker_pid"], r["worker_pid"])
        old = self.assert_numpy("numpy<2", "3.11", "1.26.4")
        self.assertEqual(old["spec"], "numpy==1.26.4")
        self.assertNotEqual(old["worker_pid"], r["worker_pid"])
        self.assert_numpy("numpy >= 1.26 , < 2.2.6", "py311", "1.26.4")

    def test_no_bubble_allowed_runs_the_base_environment(self):
        rc, r = self.exec_json("numpy>=3", "3.11", NUMPY_CODE)
        rc_base, base = self.exec_json("base", "3.11", "pass")
        self.assertEqual(rc_base, 0, base)
        self.assertEqual(r["spec"], "numpy")
        self.assertNotEqual(r["worker_pid"], base["worker_pid"], "numpy>=3 is not 'base'")
        if self.base_has_numpy():
            # The interpreter's own numpy, not a bubble's.
            self.assertEqual(rc, 0, r)
            bubbles = os.path.realpath(os.path.join(self.d.home, "bubbles"))
            self.assertFalse(os.path.realpath(r["result"][1]).startswith(bubbles + os.sep), r)
        else:
            self.assertEqual((rc, r["reason"]), (1, "exception"), r)
            self.assertIn("No module named 'numpy'", r["error"])

    def test_pin_still_needs_its_bubble(self):
        rc, r = self.exec_json("numpy==2.3.5", "3.11", "pass")
        self.assertEqual((rc, r["reason"]), (2, "nobubble"), r)
        self.assertIn("omnipkg install numpy==2.3.5 --python 3.11", r["error"])
        rc, r = self.exec_json("numpy==1.*", "3.11", "pass")
        self.assertEqual((rc, r["reason"]), (2, "badspec"), r)
        self.assertIn("wildcard", r["error"])


if __name__ == "__main__":
    unittest.main()
