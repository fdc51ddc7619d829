"""The data plane through the CLI: `omnipkg shm create|ls|rm` and
`omnipkg exec --array/--bind`, against the real daemon and a real numpy.

    $ omnipkg shm create frame 1M
    /run/user/0/omnipkg/shm/frame
    $ omnipkg exec --spec numpy==2.2.6 --python 3.11 \\
          --array arr_in=frame:float32:512,512 -c 'arr_in[:] = 2.5; print(float(arr_in.sum()))'
    655360.0
    $ omnipkg shm rm frame

Each test starts its own daemon (harness.DaemonFixture).  The numpy test
links the numpy 2.2.6 bubble of the default home (scripts/bubbles.sh) into
the private home; under CI=true a missing bubble fails instead of skips.
"""

import array
import json
import os
import unittest

import harness

PY = harness.find_pythons(("3.11",))
REAL_HOME = os.environ.get("OMNIPKG_HOME") or os.path.join(
    os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "omnipkg")
NUMPY = "2.2.6"
MIB = 1 << 20


class ShmCliTest(unittest.TestCase):
    def setUp(self):
        why = harness.DaemonFixture.available()
        if why:
            if os.environ.get("CI") == "true":
                self.fail(why)
            self.skipTest(why)
        if "3.11" not in PY:
            self.skipTest("python 3.11 not installed")
        self.d = harness.DaemonFixture()
        self.d.start()

    def tearDown(self):
        problems = self.d.stop()
        self.assertEqual(problems, [])

    def link_numpy(self):
        src = os.path.join(REAL_HOME, "bubbles", "cp311", "numpy-" + NUMPY)
        if not os.path.isdir(src):
            msg = "bubble numpy==%s for 3.11 missing (scripts/bubbles.sh)" % NUMPY
            if os.environ.get("CI") == "true":
                self.fail(msg)
            self.skipTest(msg)
        dst = os.path.join(self.d.home, "bubbles", "cp311")
        os.makedirs(dst, exist_ok=True)
        os.symlink(src, os.path.join(dst, os.path.basename(src)))

    def ok(self, *args):
        r = self.d.cli(*args)
        self.assertEqual(r.returncode, 0, "omnipkg %s: %s" % (" ".join(args), r.stderr))
        return r

    def segments(self):
        return {s["name"]: s for s in json.loads(self.ok("shm", "ls", "--json").stdout)["segments"]}

    def test_create_exec_in_place_rm(self):
        self.link_numpy()
        path = self.ok("shm", "create", "frame", "1M").stdout.strip()
        self.assertEqual(os.path.getsize(path), MIB)
        self.assertIn("frame", self.ok("shm", "ls").stdout)
        seg = self.segments()["frame"]
        self.assertEqual(seg["size"], MIB)
        self.assertEqual(seg["path"], path)
        # created by a CLI that has since exited: it persists
        self.assertTrue(seg["persist"])

        r = self.ok("exec", "--spec", "numpy==" + NUMPY, "--python", "3.11",
                    "--array", "arr_in=frame:float32:512,512",
                    "-c", "arr_in[:] = 2.5; print(float(arr_in.sum()))")
        self.assertEqual(r.stdout, "655360.0\n")
        with open(path, "rb") as f:
            data = array.array("f", f.read())
        self.assertEqual(len(data), 512 * 512)
        self.assertEqual(data.count(2.5), 512 * 512, "written in place")

        # an offset (bytes) and a shape of one dimension: the last four floats
        with open(path, "r+b") as f:
            f.seek(MIB - 16)
            f.write(array.array("f", [1, 2, 3, 4]).tobytes())
        r = self.ok("exec", "--spec", "numpy==" + NUMPY, "--python", "3.11",
                    "--array", "tail=frame:float32:4:%d" % (MIB - 16),
                    "-c", "print(tail.tolist())")
        self.assertEqual(r.stdout, "[1.0, 2.0, 3.0, 4.0]\n")

        self.ok("shm", "rm", "frame")
        self.assertNotIn("frame", self.segments())
        self.assertFalse(os.path.exists(path))
        r = self.d.cli("shm", "rm", "frame")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("frame", r.stderr)

    def test_create_refusals(self):
        self.ok("shm", "create", "twice", "4K")
        r = self.d.cli("shm", "create", "twice", "4K")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("twice", r.stderr)
        r = self.d.cli("shm", "create", "x", "4Q")
        self.assertEqual(r.returncode, 100)
        self.assertIn("SIZE", r.stderr)
        self.ok("shm", "rm", "twice")

    def test_bad_array_text_is_a_usage_error(self):
        for bad in ("arr_in=frame:float32", "arr_in=frame:float32:5,x", "=frame:float32:4",
                    "a=frame:float32:4:-1", "noequals"):
            r = self.d.cli("exec", "--spec", "base", "--python", "3.11", "--array", bad,
                           "-c", "pass")
            self.assertEqual(r.returncode, 100, bad)
            self.assertIn("--array", r.stderr)
            self.assertIn(bad, r.stderr)

    def test_unknown_segment_is_refused(self):
        r = self.d.cli("exec", "--json", "--spec", "base", "--python", "3.11",
                       "--array", "a=nosuch:float32:4", "-c", "print('ran')")
        self.assertEqual(r.returncode, 2, r.stderr)
        reply = json.loads(r.stdout)
        self.assertFalse(reply["ok"])
        self.assertEqual(reply["reason"], "nosegment")
        self.assertNotIn("ran", reply.get("stdout", ""))
        r = self.d.cli("exec", "--spec", "base", "--python", "3.11",
                       "--array", "a=nosuch:float32:4", "-c", "print('ran')")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stdout, "")
        self.assertTrue(r.stderr)

    def test_bind_values(self):
        r = self.ok("exec", "--spec", "base", "--python", "3.11", "--bind", "k=3",
                    "--bind", 's="x"', "--bind", "m={\"a\": [1, null]}",
                    "-c", "print(k * 2, s, m)")
        self.assertEqual(r.stdout, "6 x {'a': [1, None]}\n")
        r = self.d.cli("exec", "--spec", "base", "--bind", "k=[1", "-c", "pass")
        self.assertEqual(r.returncode, 100)
        self.assertIn("--bind", r.stderr)


if __name__ == "__main__":
    unittest.main()
