"""What a hostile or clumsy user found, each kept from coming back.

Runs the real daemon (harness.DaemonFixture) on a private runtime dir;
the mount tests need /dev/fuse and fail without it under CI=true.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from harness import DaemonFixture, find_pythons

PYTHONS = find_pythons(("3.11", "3.12", "3.13", "3.9"))
CI = os.environ.get("CI") == "true"
MiB = 1 << 20

# A job that starts a grandchild in a session of its own (the classic
# daemon double fork), writes its pid to PIDFILE and then does BODY.
DAEMONIZE = """
import os, time
pidfile = %r
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open(pidfile + '.tmp', 'w') as f:
            f.write(str(os.getpid()))
        os.rename(pidfile + '.tmp', pidfile)
        os.execvp('sleep', ['sleep', '300'])
    os._exit(0)
os.wait()
while not os.path.exists(pidfile):
    time.sleep(0.01)
%s
"""


def wait_gone(pid, timeout=15.0):
    """True once /proc/PID is gone (reaped) within timeout seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not os.path.exists("/proc/%d" % pid):
            return True
        time.sleep(0.02)
    return False


def read_pid(path):
    with open(path) as f:
        return int(f.read())


def kill_quietly(pid):
    try:
        os.kill(pid, 9)
    except OSError:
        pass


def need_fuse(test):
    if os.path.exists("/dev/fuse") and shutil.which("fusermount3"):
        return
    if CI:
        test.fail("FUSE is required under CI (/dev/fuse, fusermount3)")
    test.skipTest("FUSE is not available here")


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f if len(line.split()) > 2)


class DaemonCase(unittest.TestCase):
    config = None
    mount = False

    def setUp(self):
        why = DaemonFixture.available()
        if why:
            self.skipTest(why)
        if not PYTHONS:
            self.fail("no Python 3.9..3.13 interpreter found")
        self.py = sorted(PYTHONS)[0]
        self.tmp = tempfile.mkdtemp(prefix="omnipkg-hard-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.mnt = None
        if self.mount:
            need_fuse(self)
            self.mnt = os.path.join(self.tmp, "mnt")
        self.d = DaemonFixture(config=self.config, mount=self.mnt)
        self.d.start()
        self.addCleanup(self.stop_daemon)
        if self.mnt:
            end = time.monotonic() + 20
            while not os.path.isdir(os.path.join(self.mnt, "specs")):
                self.assertLess(time.monotonic(), end, self.d.log_tail())
                time.sleep(0.05)

    def stop_daemon(self):
        problems = self.d.stop()
        if self.mnt and mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", self.mnt])
        self.assertEqual(problems, [])

    def exec(self, code, *extra):
        r = self.d.cli("exec", "--json", "--spec", "base", "--python", self.py, *extra, "-c", code)
        return r.returncode, json.loads(r.stdout)

    def status(self):
        r = self.d.cli("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)


class TestNothingOutlivesItsJob(DaemonCase):
    """A job's child that calls setsid() dies with the job's timeout, with
    the job's end where cgroups exist, and with the daemon's stop."""

    def test_setsid_child_dies_at_the_timeout(self):
        pidfile = os.path.join(self.tmp, "child.pid")
        rc, r = self.exec(DAEMONIZE % (pidfile, "time.sleep(600)"), "--timeout", "3")
        self.assertEqual(r["reason"], "timeout", r)
        pid = read_pid(pidfile)
        self.addCleanup(kill_quietly, pid)
        self.assertTrue(wait_gone(pid), "the job's setsid() child outlived its timeout")

    def test_setsid_child_dies_with_its_job(self):
        if self.status().get("containment") != "cgroup":
            self.skipTest("no cgroup v2 here: leftovers die with the worker, not the job")
        pidfile = os.path.join(self.tmp, "child.pid")
        rc, r = self.exec(DAEMONIZE % (pidfile, "result = 'done'"))
        self.assertTrue(r["ok"], r)
        pid = read_pid(pidfile)
        self.addCleanup(kill_quietly, pid)
        self.assertTrue(wait_gone(pid), "the job's setsid() child outlived the job")
        self.assertGreaterEqual(self.status()["leftovers_killed"], 1)
        rc, r2 = self.exec("import os; result = os.getpid()")
        self.assertEqual(r2["result"], r["worker_pid"], "the worker itself must live on")

    def test_setsid_child_dies_with_the_daemon(self):
        pidfile = os.path.join(self.tmp, "child.pid")
        p = self.d.cli_popen("exec", "--spec", "base", "--python", self.py, "-c",
                             DAEMONIZE % (pidfile, "time.sleep(600)"))
        self.addCleanup(p.communicate)
        end = time.monotonic() + 30
        while not os.path.exists(pidfile):
            self.assertLess(time.monotonic(), end, self.d.log_tail())
            time.sleep(0.02)
        pid = read_pid(pidfile)
        self.addCleanup(kill_quietly, pid)
        r = self.d.cli("daemon", "stop")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.d.proc.wait(15)
        self.assertTrue(wait_gone(pid), "the job's setsid() child outlived the daemon")


class TestSingleInstance(DaemonCase):
    def test_daemon_flag_exits_1_when_one_runs(self):
        r = subprocess.run([self.d.daemon_bin, "--daemon"], env=self.d.env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)


class TestMount(DaemonCase):
    mount = True
    config = {"shm_quota": 10 * MiB}

    def p(self, *parts):
        return os.path.join(self.mnt, *parts)

    def ctl(self, line):
        try:
            with open(self.p("ctl"), "w") as f:
                f.write(line + "\n")
        except OSError as e:
            return e.errno
        return 0

    def fusefs_jobs(self):
        with open(self.p("stats")) as f:
            return json.load(f)["fusefs"]["jobs_submitted"]

    def test_oversize_code_runs_nothing(self):
        marker = os.path.join(self.tmp, "ran")
        code = ("open(%r, 'w').close()\n" % marker).encode() + b"#" * (1 << 20) + b"\n"
        before = self.fusefs_jobs()
        fd = os.open(self.p("specs", "base", self.py, "exec"), os.O_WRONLY)
        refused = None
        try:
            for i in range(0, len(code), 1 << 16):
                try:
                    os.write(fd, code[i:i + (1 << 16)])
                except OSError as e:
                    refused = e.errno
                    break
        finally:
            try:
                os.close(fd)
            except OSError as e:
                self.assertEqual(e.errno, 27)   # EFBIG again at close
        self.assertEqual(refused, 27, "a write past 1 MiB must fail with EFBIG")
        self.assertEqual(self.fusefs_jobs(), before, "part of an oversize program was run")
        self.assertFalse(os.path.exists(marker))
        # The context still works.
        with open(self.p("specs", "base", self.py, "exec"), "w") as f:
            f.write("print('fine')\n")
        with open(self.p("specs", "base", self.py, "stdout")) as f:
            self.assertEqual(f.read(), "fine\n")

    def test_quota_holds_through_the_mount(self):
        st = self.status()["shm"]
        if not st["quota_enforced_by_kernel"]:
            if CI:
                self.fail("CI runs as root: the daemon must mount its own tmpfs")
            self.skipTest("the daemon cannot mount a tmpfs here")
        self.assertEqual(self.ctl("shm create seg 1M"), 0)
        seg = self.p("shm", "seg")
        # truncate follows the symlink to the backing file: only the kernel can stop it.
        subprocess.run(["truncate", "-s", "1G", seg], capture_output=True)
        w = subprocess.run(["dd", "if=/dev/zero", "of=" + seg, "bs=1M", "count=20",
                            "conv=notrunc"], capture_output=True, text=True)
        self.assertNotEqual(w.returncode, 0, "20 MiB went into a 10 MiB quota")
        self.assertIn("No space left", w.stderr)
        vfs = os.statvfs(os.path.realpath(seg))
        self.assertLessEqual((vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize, 10 * MiB)

    def test_refused_create_leaves_nothing(self):
        self.assertEqual(self.ctl("shm create big 20M"), 122)   # EDQUOT
        self.assertNotIn("big", os.listdir(self.p("shm")))
        self.assertEqual(self.ctl("shm create a 6M"), 0)
        self.assertEqual(self.ctl("shm create b 6M"), 122)
        self.assertEqual(os.listdir(self.p("shm")), ["a"])

    def test_pages_are_reserved_at_create(self):
        self.assertEqual(self.ctl("shm create r 4M"), 0)
        st = os.stat(os.path.realpath(self.p("shm", "r")))
        self.assertEqual(st.st_size, 4 * MiB)
        self.assertGreaterEqual(st.st_blocks * 512, 4 * MiB, "a sparse segment can SIGBUS later")

    def read(self, *parts):
        with open(self.p(*parts)) as f:
            return f.read()

    def raw(self):
        from test_server_abuse import Conn
        c = Conn(self.d.socket)
        self.addCleanup(c.close)
        return c

    def test_segment_meta_readable_from_the_shell(self):
        c = self.raw()
        m = c.call({"v": 1, "id": 1, "op": "shm_create", "size": 64, "name": "meta",
                    "persist": True, "dtype": "float32", "shape": [4, 4]})
        self.assertTrue(m["ok"], m)
        with open(self.p("ctl")) as f:
            self.assertIn("segment meta 64 <f4 [4,4] 0 persist\n", f.read())

    def test_rm_of_a_leased_segment_fails_clearly(self):
        c = self.raw()
        self.assertEqual(self.ctl("shm create held 4K"), 0)
        go = os.path.join(self.tmp, "go")
        code = "import os, time\nwhile not os.path.exists(%r):\n    time.sleep(0.01)\n" % go
        c.send({"v": 1, "id": 2, "op": "exec", "spec": "base", "python": self.py, "code": code,
                "arrays": [{"name": "x", "segment": "held", "dtype": "|u1", "shape": [16]}]})
        end = time.monotonic() + 30
        while " 1 persist" not in self.read("ctl"):
            self.assertLess(time.monotonic(), end, "the job never leased the segment")
            time.sleep(0.02)
        with self.assertRaises(OSError) as cm:
            os.unlink(self.p("shm", "held"))
        self.assertEqual(cm.exception.errno, 16)   # EBUSY: a job maps it
        open(go, "w").close()
        self.assertTrue(c.recv()["ok"])
        os.unlink(self.p("shm", "held"))
        self.assertNotIn("held", os.listdir(self.p("shm")))

    def test_second_daemon_refuses_a_live_mount(self):
        other = DaemonFixture(mount=self.mnt)
        try:
            with self.assertRaises(RuntimeError) as cm:
                other.start(timeout=20)
            self.assertIn("in use", str(cm.exception))
        finally:
            other.mount = None   # the mount is the first daemon's: leave it
            other.stop()
        with open(self.p("specs", "base", self.py, "exec"), "w") as f:
            f.write("print('still mine')\n")
        with open(self.p("specs", "base", self.py, "stdout")) as f:
            self.assertEqual(f.read(), "still mine\n")


if __name__ == "__main__":
    unittest.main()
