"""omnipkg 3.4.1's own daemon tests (tests/test_omnipkg_contracts.py of its
sdist, fetched from the package registry by tests/compat/setup.sh) run
unchanged with pytest against our daemon and our client package.

What runs is every test of that file that needs no torch, TensorFlow, GPU
or omnipkg's in-process loader (omnipkgLoader: not part of a daemon); the
exact list is checked, so a test that stops being selected fails here.
The test process is a Python 3.11 venv (pytest, numpy 1.26.4), so
`python_exe=None` means that venv's python, as it does for omnipkg's users.
"""

import os
import subprocess
import sys
import unittest
import xml.etree.ElementTree as ET

import harness
from test_compat import REAL_HOME, link

REPO = harness.REPO
SETUP = os.path.join(REPO, "tests", "compat", "setup.sh")
FILE = "test_omnipkg_contracts.py"

# Not applicable here: torch / TensorFlow specs, CUDA, omnipkg's loader.
DESELECT = ("torch", "tensorflow", "Cuda", "pkg_resources", "lightning", "high_frequency",
            "python39_worker", "Filesystem")
EXPECTED = sorted([
    "TestVersionIsolation::test_numpy_exact_version[1.24.3]",
    "TestVersionIsolation::test_numpy_exact_version[1.26.4]",
    "TestVersionIsolation::test_numpy_exact_version[2.3.5]",
    "TestVersionIsolation::test_two_numpy_versions_simultaneously",
    "TestMathCorrectness::test_numpy_deterministic_sum[1.24.3]",
    "TestMathCorrectness::test_numpy_deterministic_sum[1.26.4]",
    "TestMathCorrectness::test_numpy_deterministic_sum[2.3.5]",
    "TestWorkerPersistence::test_subsequent_calls_are_fast",
    "TestWorkerPersistence::test_worker_maintains_state_across_calls",
    "TestThreadSafety::test_concurrent_different_versions_no_corruption",
    "TestZeroCopySHM::test_shm_roundtrip_math[numpy==1.24.3]",
    "TestZeroCopySHM::test_shm_roundtrip_math[numpy==1.26.4]",
    "TestZeroCopySHM::test_shm_roundtrip_math[numpy==2.3.5]",
    "TestZeroCopySHM::test_shm_3stage_pipeline",
    "TestMultiPythonIsolation::test_three_pythons_concurrent",
    "TestDaemonLifecycle::test_status_returns_success",
    "TestDaemonLifecycle::test_status_includes_worker_count",
    "TestDaemonLifecycle::test_worker_survives_code_exception",
])
BUBBLES = (("3.11", "1.24.3"), ("3.11", "1.26.4"), ("3.11", "2.3.5"), ("3.9", "1.26.4"),
           ("3.10", "1.26.4"))


class OmnipkgOwnTests(unittest.TestCase):
    def test_contracts_file(self):
        why = harness.DaemonFixture.available()
        if why:
            self.skipTest(why)
        r = subprocess.run(["bash", SETUP], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=900)
        self.assertEqual(r.returncode, 0, "tests/compat/setup.sh failed:\n" + r.stderr)
        top = r.stdout.strip().splitlines()[-1]
        py = os.path.join(top, "venv", "bin", "python")
        tests = os.path.join(top, "omnipkg-3.4.1", "tests")
        pythons = harness.find_pythons(("3.9", "3.10", "3.11"))
        self.assertEqual(len(pythons), 3, "needs Python 3.9, 3.10 and 3.11: %r" % pythons)

        d = harness.DaemonFixture()
        for v, numpy in BUBBLES:
            link(d, v, "numpy", numpy)
        d.start()
        try:
            junit = os.path.join(d.tmp, "junit.xml")
            # `which python3.X` (how the file finds interpreters) must not
            # answer with a pyenv shim.
            path = os.pathsep.join([os.path.dirname(p) for p in pythons.values()]
                                   + [os.environ.get("PATH", "")])
            env = dict(d.env, PATH=path, OMNIPKGD=d.daemon_bin,
                       PYTHONPATH=os.path.join(REPO, "src", "python"),
                       PYTHONDONTWRITEBYTECODE="1")
            r = subprocess.run(
                [py, "-m", "pytest", FILE, "-v", "-p", "no:cacheprovider", "-rA",
                 "--junitxml", junit, "-k", " and ".join("not " + k for k in DESELECT)],
                cwd=tests, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=900)
            out = r.stdout + r.stderr
            sys.stderr.write(out[-6000:])
            self.assertTrue(os.path.exists(junit), out[-3000:])
            results = {}
            for tc in ET.parse(junit).iter("testcase"):
                name = "%s::%s" % (tc.get("classname").split(".")[-1], tc.get("name"))
                kinds = [c.tag for c in tc if c.tag in ("failure", "error", "skipped")]
                results[name] = kinds[0] if kinds else "passed"
            self.assertEqual(sorted(results), EXPECTED, "the selected tests changed")
            bad = {k: v for k, v in results.items() if v != "passed"}
            self.assertEqual(bad, {}, out[-6000:])
            self.assertEqual(r.returncode, 0, out[-3000:])
            # They ran on our daemon: its workers answered them.
            st = d.cli("status", "--json")
            self.assertEqual(st.returncode, 0, st.stderr)
            self.assertGreaterEqual(__import__("json").loads(st.stdout)["jobs"], 40)
        finally:
            self.assertEqual(d.stop(), [])


if __name__ == "__main__":
    unittest.main()
