"""Integration tests of the control filesystem (fusefs/): the real daemon
mounted on a private temp dir, driven with bash, Python and a small C
program.

    $ OMNIPKG_TEST_BUILD=build python -m unittest -v test_fusefs.py

Each test starts its own daemon and mount and takes both down, pass or
fail (fusermount3 -u -z as a last resort); a daemon that leaves a
process or a sanitizer report behind fails the test.  Without FUSE (or a
build, or an interpreter) the tests are skipped, except under CI=true,
where that fails them.  The numpy tests use the real omnipkg home
($OMNIPKG_TEST_REAL_HOME, else ~/.local/share/omnipkg) when it holds two
numpy bubbles for one interpreter, and are skipped otherwise.

Jobs that must still be running when the test looks are held at a gate:
they wait for a file that the test creates when it is done looking.
"""

import errno
import json
import mmap
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from harness import DaemonFixture, find_pythons, unmount_below

TIMEOUT = 60.0
PYTHONS = find_pythons(("3.11", "3.12", "3.13", "3.10", "3.9"))
REAL_HOME = os.environ.get("OMNIPKG_TEST_REAL_HOME") or os.path.expanduser("~/.local/share/omnipkg")
NUMPY_VERSIONS = ("1.26.4", "2.2.6")
CI = os.environ.get("CI") == "true"

SHM_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* shmtool PATH write OFFSET TEXT | shmtool PATH read OFFSET LEN */
int main(int argc, char **argv)
{
	struct stat st;
	int fd;
	char *p;
	long off;

	if (argc != 5)
		return 100;
	fd = open(argv[1], O_RDWR);
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	p = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	off = atol(argv[3]);
	if (strcmp(argv[2], "write") == 0)
		memcpy(p + off, argv[4], strlen(argv[4]));
	else
		fwrite(p + off, 1, (size_t)atol(argv[4]), stdout);
	munmap(p, st.st_size);
	close(fd);
	return 0;
}
"""


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[1] == path:
                return True
    return False


def force_unmount(path):
    subprocess.run(["fusermount3", "-u", "-z", path], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bash(script, timeout=TIMEOUT, **env):
    return subprocess.run(["bash", "-c", script], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, env=dict(os.environ, **env))


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def errno_of(fn):
    try:
        fn()
    except OSError as e:
        return e.errno
    return 0


def peak_rss(pid):
    """VmHWM of pid in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM for pid %d" % pid)


def real_home_numpy():
    """The interpreter tag that has both numpy bubbles in the real home, or None."""
    root = os.path.join(REAL_HOME, "bubbles")
    try:
        tags = sorted(os.listdir(root))
    except OSError:
        return None
    for tag in tags:
        if all(os.path.isdir(os.path.join(root, tag, "numpy-" + v)) for v in NUMPY_VERSIONS):
            return tag
    return None


class MountCase(unittest.TestCase):
    """Starts omnipkgd --mount on a temp dir; tears everything down."""

    config = None
    home = None

    def unavailable(self, why):
        """Skips, or fails under CI, where every test must run."""
        if CI:
            self.fail(why + " (CI=true: a test that cannot run fails)")
        self.skipTest(why)

    def setUp(self):
        why = DaemonFixture.available()
        if why:
            self.unavailable(why)
        if not PYTHONS:
            self.unavailable("no Python 3.9..3.13 interpreter found")
        if not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
            self.unavailable("FUSE is not available here (/dev/fuse, fusermount3)")
        self.base = tempfile.mkdtemp(prefix="omnipkg-fuse-")
        self.mnt = os.path.join(self.base, "mnt")
        self.d = None
        self.addCleanup(self._cleanup)
        self.start()

    def start(self):
        # The daemon makes the mount point itself (and cleans a stale mount
        # there), so the fixture is not told about it.
        self.d = DaemonFixture(config=self.config, extra_args=["--mount", self.mnt])
        if self.home:
            self.d.env["OMNIPKG_HOME"] = self.home
        self.d.start()
        self.wait_mounted()
        return self.d

    def wait_mounted(self, timeout=20.0):
        end = time.monotonic() + timeout
        while not (mounted(self.mnt) and os.path.isdir(os.path.join(self.mnt, "specs"))):
            if self.d.proc.poll() is not None or time.monotonic() > end:
                self.fail("%s not mounted:\n%s" % (self.mnt, self.d.log_tail()))
            time.sleep(0.05)

    def dispose(self):
        """Stops the daemon; after one that is already dead, kills what it
        left behind.  Returns the problems seen (harness.DaemonFixture.stop)."""
        problems = []
        if self.d is None:
            return problems
        if self.d.proc is not None and self.d.proc.poll() is None:
            problems = self.d.stop()
        else:
            problems = self.d.reap_leftovers() + self.d.sanitizer_reports()
            unmount_below(self.d.runtime)   # a dead daemon's shm tmpfs
            if self.d.proc is not None:
                self.d._kill_group()
                self.d.proc = None
            if self.d._log:
                self.d._log.close()
                self.d._log = None
            if not problems:
                shutil.rmtree(self.d.tmp, ignore_errors=True)
        self.d = None
        return problems

    def _cleanup(self):
        problems = self.dispose()
        if mounted(self.mnt):
            force_unmount(self.mnt)
        shutil.rmtree(self.base, ignore_errors=True)
        if problems:
            raise AssertionError("\n".join(problems))

    def p(self, *parts):
        return os.path.join(self.mnt, *parts)

    def gate(self):
        """(path, code): code that blocks a job until path exists."""
        path = os.path.join(self.base, "gate-%d" % len(os.listdir(self.base)))
        code = ("import os, time\nend = time.monotonic() + %d\n"
                "while not os.path.exists(%r) and time.monotonic() < end:\n"
                "    time.sleep(0.01)\n" % (TIMEOUT, path))
        return path, code

    def fuse_stats(self):
        return json.loads(read(self.p("stats")))["fusefs"]

    def wait_for(self, what, cond):
        """Polls cond() until true, for at most TIMEOUT seconds."""
        end = time.monotonic() + TIMEOUT
        while not cond():
            if time.monotonic() > end:
                self.fail("timed out waiting for " + what)
            time.sleep(0.02)

    def ctx(self, spec="base", py=None):
        return self.p("specs", spec, py or sorted(PYTHONS)[0])

    def run_code(self, code, spec="base", py=None):
        """One transaction on an O_RDWR exec descriptor; the result dict."""
        fd = os.open(os.path.join(self.ctx(spec, py), "exec"), os.O_RDWR)
        try:
            os.write(fd, code.encode())
            data = b""
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        return json.loads(data)

    def assert_serving(self):
        r = self.run_code("print('still here')")
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["stdout"], "still here\n")


class TestExec(MountCase):

    def test_echo_cat_two_interpreters(self):
        if len(PYTHONS) < 2:
            self.skipTest("needs two interpreters, found %s" % sorted(PYTHONS))
        a, b = sorted(PYTHONS)[:2]
        r = bash('echo "$C" > "$A/exec" & echo "$C" > "$B/exec" & wait\n'
                 'cat "$A/stdout" "$B/stdout"; cat "$A/status"',
                 C="import sys; print('%d.%d' % sys.version_info[:2])",
                 A=self.ctx("base", a), B=self.ctx("base", b))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "%s\n%s\ndone\n" % (a, b))
        res = json.loads(read(os.path.join(self.ctx("base", a), "result")))
        self.assertTrue(res["ok"])
        self.assertEqual(res["spec"], "base")
        self.assertIn("worker_pid", res)
        self.assertIn("id", res)

    def test_before_any_job(self):
        c = self.ctx()
        self.assertEqual(read(os.path.join(c, "status")), "idle\n")
        self.assertEqual(read(os.path.join(c, "result")), "{}\n")
        self.assertEqual(read(os.path.join(c, "stdout")), "")

    def test_ls_recursive(self):
        self.run_code("print(1)")
        r = bash("ls -R %s" % self.mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        for name in ("specs:", "base", "exec", "stdout", "result", "jobs", "pythons", "shm",
                     "workers", "stats", "ctl", sorted(PYTHONS)[0]):
            self.assertIn(name, r.stdout)
        self.assertIn("%s/jobs/1:" % self.mnt, r.stdout)
        py = sorted(PYTHONS)[0]
        self.assertEqual(os.path.realpath(self.p("pythons", py)),
                         os.path.realpath(self.p("pythons", py)))
        self.assertTrue(os.path.islink(self.p("pythons", py)))
        self.assertTrue(os.access(os.readlink(self.p("pythons", py)), os.X_OK))
        workers = os.listdir(self.p("workers"))
        self.assertEqual(len(workers), 1)
        status = read(self.p("workers", workers[0], "status"))
        self.assertIn("pid: %s" % workers[0], status)
        stats = json.loads(read(self.p("stats")))
        self.assertIn("fusefs", stats)
        self.assertGreaterEqual(stats["fusefs"]["jobs_submitted"], 1)

    def test_stat_size_of_finished_result(self):
        self.run_code("print('x' * 1000)")
        for name in ("result", "stdout", "status"):
            path = os.path.join(self.ctx(), name)
            with open(path, "rb") as f:
                data = f.read()
            self.assertEqual(os.stat(path).st_size, len(data), name)
        self.assertEqual(os.stat(os.path.join(self.ctx(), "stdout")).st_size, 1001)
        job = json.loads(read(os.path.join(self.ctx(), "result")))["id"]
        self.assertEqual(read(self.p("jobs", str(job), "code")), "print('x' * 1000)")

    def test_read_waits_for_job(self):
        gate, code = self.gate()
        with open(os.path.join(self.ctx(), "exec"), "w") as f:
            f.write(code + "print('late')\n")
        self.assertEqual(read(os.path.join(self.ctx(), "status")), "running\n")
        got = {}
        reader = threading.Thread(target=lambda: got.update(
            out=read(os.path.join(self.ctx(), "stdout"))))
        reader.start()
        self.wait_for("the stdout read to wait", lambda: self.fuse_stats()["reads_waiting"] >= 1)
        self.assertNotIn("out", got, "the read returned before the job finished")
        open(gate, "w").close()
        reader.join(TIMEOUT)
        self.assertEqual(got.get("out"), "late\n")

    def test_poll_on_output(self):
        gate, code = self.gate()
        with open(os.path.join(self.ctx(), "exec"), "w") as f:
            f.write(code + "print('polled')\n")
        fd = os.open(os.path.join(self.ctx(), "stdout"), os.O_RDONLY)
        try:
            p = select.poll()
            p.register(fd, select.POLLIN)
            self.assertEqual(p.poll(0), [])
            open(gate, "w").close()
            ev = p.poll(TIMEOUT * 1000)
            self.assertTrue(ev and ev[0][1] & select.POLLIN, ev)
            self.assertEqual(os.read(fd, 100), b"polled\n")
        finally:
            os.close(fd)

    def test_interrupted_read_returns(self):
        gate, code = self.gate()
        with open(os.path.join(self.ctx(), "exec"), "w") as f:
            f.write(code)
        r = bash("timeout -s INT 0.3 cat %s/result" % self.ctx())
        self.assertEqual(r.returncode, 124)
        # cat came back while the job is still held: its read was interrupted.
        self.assertEqual(read(os.path.join(self.ctx(), "status")), "running\n")
        self.assertGreaterEqual(self.fuse_stats()["reads_interrupted"], 1)
        open(gate, "w").close()
        self.assertTrue(json.loads(read(os.path.join(self.ctx(), "result")))["ok"])

    def test_16_concurrent_transactions(self):
        out, errs = {}, []

        def one(i):
            try:
                out[i] = self.run_code("import time; time.sleep(0.01); print('token-%d')" % i)
            except Exception as e:  # reported below
                errs.append(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        self.assertEqual(errs, [])
        self.assertEqual(sorted(out), list(range(16)))
        for i, r in out.items():
            self.assertTrue(r["ok"], r)
            self.assertEqual(r["stdout"], "token-%d\n" % i)
        self.assertEqual(len({r["id"] for r in out.values()}), 16)

    def test_job_failure(self):
        r = self.run_code("raise ValueError('boom')")
        self.assertFalse(r["ok"])
        self.assertEqual(read(os.path.join(self.ctx(), "status")), "failed\n")
        self.assertIn("boom", read(os.path.join(self.ctx(), "error")))
        self.assert_serving()


class TestErrors(MountCase):

    def check(self, want, fn, what):
        self.assertEqual(errno_of(fn), want, "%s: want %s" % (what, errno.errorcode[want]))
        self.assert_serving()

    def test_unknown_spec(self):
        self.check(errno.ENOENT, lambda: os.stat(self.p("specs", "not a spec")), "bad spec")
        self.check(errno.ENOENT, lambda: os.stat(self.p("specs", "base", "2.1")), "bad python")
        self.check(errno.ENOENT, lambda: os.stat(self.p("specs", "base", "exec")), "not a python")
        self.check(errno.ENOENT, lambda: os.stat(self.p("jobs", "999999")), "no job")
        self.check(errno.ENOENT, lambda: os.stat(self.p("nothing")), "no such top dir")

    def test_no_bubble(self):
        spec = "surely-not-installed==0.0.1"
        os.stat(self.p("specs", spec))   # any valid spec name resolves
        self.check(errno.ENOENT, lambda: os.stat(self.ctx(spec)), "no bubble")
        self.check(errno.ENOENT, lambda: open(os.path.join(self.ctx(spec), "exec"), "w"),
                   "exec without bubble")

    def test_empty_code(self):
        def wronly():
            fd = os.open(os.path.join(self.ctx(), "exec"), os.O_WRONLY)
            os.close(fd)

        def rdwr():
            fd = os.open(os.path.join(self.ctx(), "exec"), os.O_RDWR)
            try:
                os.read(fd, 100)
            finally:
                os.close(fd)

        self.check(errno.EINVAL, wronly, "empty code, close")
        self.check(errno.EINVAL, rdwr, "empty code, read")

    def test_oversize_code(self):
        fd = os.open(os.path.join(self.ctx(), "exec"), os.O_WRONLY)
        try:
            os.write(fd, b"#" * (1 << 20))
            self.check(errno.EFBIG, lambda: os.write(fd, b"x"), "code over 1 MiB")
        finally:
            try:
                os.close(fd)
            except OSError:
                pass

    def test_write_read_only(self):
        for name in ("stdout", "result", "status"):
            self.assertIn(errno_of(lambda: os.open(os.path.join(self.ctx(), name), os.O_WRONLY)),
                          (errno.EACCES, errno.EPERM), name)
        self.assertIn(errno_of(lambda: os.open(self.p("stats"), os.O_WRONLY)),
                      (errno.EACCES, errno.EPERM))
        self.check(errno.EACCES, lambda: os.mkdir(self.p("specs", "-x")), "mkdir")
        self.check(errno.EACCES, lambda: os.unlink(os.path.join(self.ctx(), "stdout")), "rm")

    def test_bad_ctl_and_shm_names(self):
        def ctl(line):
            with open(self.p("ctl"), "w") as f:
                f.write(line)

        self.check(errno.EINVAL, lambda: ctl("frobnicate\n"), "unknown ctl command")
        self.check(errno.EINVAL, lambda: ctl("shm create ../x 10\n"), "bad segment name")
        self.check(errno.ENOENT, lambda: ctl("shm rm missing\n"), "rm a missing segment")
        self.check(errno.ENOENT, lambda: os.open(self.p("shm", "bad name"),
                                                 os.O_CREAT | os.O_RDWR), "bad create name")


class TestShm(MountCase):

    config = {"shm_quota": 1536 << 20}

    def build_tool(self):
        if not shutil.which("cc"):
            self.skipTest("no C compiler (cc)")
        src = os.path.join(self.base, "shmtool.c")
        exe = os.path.join(self.base, "shmtool")
        with open(src, "w") as f:
            f.write(SHM_C)
        r = subprocess.run(["cc", "-O1", "-o", exe, src], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertEqual(r.returncode, 0, r.stdout)
        return exe

    def tool(self, exe, *args):
        r = subprocess.run([exe] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_c_python_worker_share_pages(self):
        exe = self.build_tool()
        seg = self.p("shm", "frame")
        r = bash("truncate -s 64M %s" % seg)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.islink(seg))
        backing = os.path.realpath(seg)
        self.assertFalse(backing.startswith(self.mnt))
        self.assertEqual(os.path.getsize(seg), 64 << 20)

        self.tool(exe, seg, "write", 0, "from-C")
        with open(seg, "r+b") as f:
            m = mmap.mmap(f.fileno(), 0)
            m[100:111] = b"from-Python"
            code = ("import mmap\nf = open(%r, 'r+b')\nm = mmap.mmap(f.fileno(), 0)\n"
                    "print(bytes(m[0:6]).decode(), bytes(m[100:111]).decode())\n"
                    "m[(64 << 20) - 11:] = b'from-worker'\nm.flush()\n" % backing)
            res = self.run_code(code)
            self.assertTrue(res["ok"], res)
            self.assertEqual(res["stdout"], "from-C from-Python\n")
            self.assertEqual(m[(64 << 20) - 11:], b"from-worker")
            m.close()
        self.assertEqual(self.tool(exe, seg, "read", (64 << 20) - 11, 11), b"from-worker")
        self.assertIn("frame", os.listdir(self.p("shm")))
        os.unlink(seg)
        self.assertFalse(os.path.exists(backing))
        self.assertNotIn("frame", os.listdir(self.p("shm")))

    def test_create_write_ftruncate_through_handle(self):
        seg = self.p("shm", "made")
        fd = os.open(seg, os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
        try:
            self.assertEqual(os.write(fd, b"abc"), 3)
            os.ftruncate(fd, 4096)
            self.assertEqual(os.pread(fd, 3, 0), b"abc")
        finally:
            os.close(fd)
        self.assertTrue(os.path.islink(seg))
        self.assertEqual(os.path.getsize(seg), 4096)
        with open(seg, "rb") as f:
            self.assertEqual(f.read(3), b"abc")
        self.assertEqual(errno_of(lambda: os.open(seg, os.O_CREAT | os.O_EXCL | os.O_RDWR)),
                         errno.EEXIST)

    def test_ctl_and_quota(self):
        with open(self.p("ctl"), "w") as f:
            f.write("shm create viactl 1M\n")
        self.assertEqual(os.path.getsize(self.p("shm", "viactl")), 1 << 20)
        with open(self.p("ctl")) as f:
            self.assertIn("shm_dir", f.read())
        r = bash("truncate -s 4G %s" % self.p("shm", "huge"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("quota", r.stderr.lower())
        with open(self.p("ctl"), "w") as f:
            f.write("shm rm viactl\n")
        self.assertFalse(os.path.lexists(self.p("shm", "viactl")))
        self.assert_serving()

    def test_big_segment_is_never_copied(self):
        # What "1 GiB costs what 1 MiB does" rests on: a round trip
        # C -> worker -> C through a 1 GiB segment copies none of it: no
        # process ever holds half of it (peak RSS).
        exe = self.build_tool()
        size = 1 << 30
        seg = self.p("shm", "big")
        r = bash("truncate -s %d %s" % (size, seg))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.tool(exe, seg, "write", size - 4, "ping")
        code = ("import mmap, os\nf = open(%r, 'r+b')\nm = mmap.mmap(f.fileno(), 0)\n"
                "assert bytes(m[%d:]) == b'ping'\nm[0:4] = b'pong'\nresult = os.getpid()\n"
                "m.close()\nf.close()\n"
                % (os.path.realpath(seg), size - 4))
        res = self.run_code(code)
        self.assertTrue(res["ok"], res)
        self.assertEqual(self.tool(exe, seg, "read", 0, 4), b"pong")
        # Its pages were reserved when it was sized, so no store can SIGBUS later.
        self.assertGreaterEqual(os.stat(os.path.realpath(seg)).st_blocks * 512, size)
        for who, pid in (("daemon", self.d.proc.pid), ("worker", res["result"])):
            self.assertLess(peak_rss(pid), size // 2, "the %s copied the segment" % who)
        os.unlink(seg)


class TestLifetime(MountCase):

    def test_sigterm_unmounts(self):
        self.assert_serving()
        self.d.proc.send_signal(signal.SIGTERM)
        self.d.proc.wait(TIMEOUT)
        self.assertFalse(mounted(self.mnt), "still mounted after SIGTERM")
        self.assertEqual(self.d.proc.returncode, 0, self.d.log_tail())

    def test_waiting_reader_answered_at_shutdown(self):
        with open(os.path.join(self.ctx(), "exec"), "w") as f:
            f.write("import time\ntime.sleep(30)\n")
        reader = subprocess.Popen(["cat", os.path.join(self.ctx(), "result")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.wait_for("cat to wait on the result", lambda: self.fuse_stats()["reads_waiting"] >= 1)
        self.d.proc.send_signal(signal.SIGTERM)
        try:
            out, err = reader.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            reader.kill()
            reader.communicate()
            self.fail("reader still blocked after shutdown")
        self.d.proc.wait(TIMEOUT)
        self.assertFalse(mounted(self.mnt))

    def test_restart_over_stale_mount(self):
        self.assert_serving()
        self.d.crash()
        self.assertTrue(mounted(self.mnt), "a killed daemon leaves its mount behind")
        self.assertEqual(errno_of(lambda: os.stat(self.p("specs"))), errno.ENOTCONN)
        self.assertEqual(self.dispose(), [], "the killed daemon's workers must die with it")
        self.start()
        self.assert_serving()


@unittest.skipUnless(real_home_numpy(), "no home at %s with numpy %s bubbles for one interpreter "
                     "(set OMNIPKG_TEST_REAL_HOME)" % (REAL_HOME, " and ".join(NUMPY_VERSIONS)))
class TestNumpyVersions(MountCase):

    home = REAL_HOME

    def test_two_numpy_versions_at_once(self):
        tag = real_home_numpy()
        py = "%s.%s" % (tag[2], tag[3:])
        specs = ["numpy==" + v for v in NUMPY_VERSIONS]
        listed = os.listdir(self.p("specs"))
        for s in specs:
            self.assertIn(s, listed)
            self.assertIn(py, os.listdir(self.p("specs", s)))
        code = "import numpy; print(numpy.__version__)"
        r = bash("echo '%s' > %s/exec & echo '%s' > %s/exec & wait; cat %s/stdout %s/stdout"
                 % (code, self.ctx(specs[0], py), code, self.ctx(specs[1], py),
                    self.ctx(specs[0], py), self.ctx(specs[1], py)), timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr + self.d.log_tail())
        self.assertEqual(r.stdout, "%s\n%s\n" % NUMPY_VERSIONS)


if __name__ == "__main__":
    unittest.main()
