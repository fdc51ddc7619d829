"""omnipkg_atomic, the one stable-ABI extension: the same file loads in
every interpreter from 3.8 to 3.13, refuses bad offsets and alignments
with an exception (never a crash), reaches workers through the daemon's
runtime dir and clients through omnipkg.atomics' search, and its atomics
hold across processes and interpreters: 1,000,000 add64 per process from
workers of 3.9 and 3.13 sum exactly, and 4 CAS writers lose no update.

A missing interpreter skips (fails under CI=true).
"""

import os
import subprocess
import sys
import textwrap
import threading
import unittest

import harness

from omnipkg import DaemonClient

BUILD = harness.build_dir()
SO = os.path.join(BUILD, "omnipkg_atomic.abi3.so")
SRC_PY = os.path.join(harness.REPO, "src", "python")
ALL = harness.find_pythons(("3.8", "3.9", "3.10", "3.11", "3.12", "3.13"))


def need(test, *versions):
    """The interpreters asked for, else skip (fail under CI=true)."""
    missing = [v for v in versions if v not in ALL]
    if not os.path.isfile(SO):
        missing.append("%s (not built)" % SO)
    if missing:
        msg = "missing: %s" % ", ".join(missing)
        if os.environ.get("CI") == "true":
            test.fail(msg)
        test.skipTest(msg)
    return [ALL[v] for v in versions]


def run(python, code, env=None, timeout=60):
    e = dict(os.environ)
    e.pop("PYTHONPATH", None)
    e.update(env or {})
    return subprocess.run([python, "-s", "-c", code], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=e, timeout=timeout)


# Run by every interpreter with the build dir first on sys.path: the
# atomics on an mmap, a bytearray and raw addresses, then every misuse,
# each of which must raise the exception named beside it.
EVERY_PY = textwrap.dedent(r"""
    import sys
    sys.path.insert(0, sys.argv[1])
    import ctypes, mmap, omnipkg_atomic as oa
    assert oa.__file__ == sys.argv[2], oa.__file__
    m = mmap.mmap(-1, 4096)
    assert oa.cas64_buf(m, 8, 0, 5) and not oa.cas64_buf(m, 8, 0, 6)
    assert oa.add64_buf(m, 8, 2) == 5 and oa.load64_buf(m, 8) == 7
    oa.store64_buf(m, 16, -3)
    assert oa.load64_buf(m, 16) == -3 and oa.add64_buf(m, 16, 3) == -3
    ba = bytearray(64)
    assert oa.add64_buf(ba, 56, 9) == 0 and ba[56] == 9
    buf = (ctypes.c_char * 4096).from_buffer(m)
    a = ctypes.addressof(buf)
    assert oa.cas64(a + 8, 7, 9) and oa.load64(a + 8) == 9
    assert oa.add64(a + 8, 1) == 9 and oa.load64_buf(m, 8) == 10
    oa.store64(a, 2**63 - 1)
    assert oa.add64(a, 1) == 2**63 - 1 and oa.load64(a) == -2**63   # wraps as the hardware does
    oa.fence()
    del buf
    ro = mmap.mmap(-1, 64, prot=mmap.PROT_READ)
    assert oa.load64_buf(ro, 0) == 0 and oa.load64_buf(b"\x01" + bytes(7), 0) == 1
    closed = mmap.mmap(-1, 64)
    closed.close()
    bad = [
        ("IndexError", lambda: oa.add64_buf(m, 4096, 1)),
        ("IndexError", lambda: oa.load64_buf(m, 4092)),
        ("IndexError", lambda: oa.cas64_buf(m, -8, 0, 1)),
        ("IndexError", lambda: oa.store64_buf(bytearray(4), 0, 1)),
        ("ValueError", lambda: oa.load64_buf(m, 4)),
        ("ValueError", lambda: oa.cas64_buf(memoryview(bytearray(32))[1:17], 0, 0, 1)),
        ("ValueError", lambda: oa.load64(0)),
        ("ValueError", lambda: oa.cas64(12, 0, 1)),
        ("TypeError", lambda: oa.cas64_buf(b"12345678", 0, 0, 1)),
        ("TypeError", lambda: oa.add64_buf(ro, 0, 1)),
        ("TypeError", lambda: oa.store64_buf(42, 0, 1)),
        ("TypeError", lambda: oa.load64_buf(m, "8")),
        ("TypeError", lambda: oa.load64("addr")),
        ("TypeError", lambda: oa.cas64(1, 2)),
        ("ValueError", lambda: oa.load64_buf(closed, 0)),
        ("OverflowError", lambda: oa.store64_buf(m, 0, 2**64)),
        ("OverflowError", lambda: oa.load64_buf(m, 2**80)),
        ("OSError", lambda: oa.ctl_read(m, 1 << 20)),         # not a control block
        ("ValueError", lambda: oa.ctl_format(memoryview(bytearray(256))[4:])),
    ]
    blk = mmap.mmap(-1, 4096)
    assert oa.ctl_format(blk) and not oa.ctl_format(blk)
    bad += [
        ("IndexError", lambda: oa.ctl_read(blk, 4096 - 128, 1)),
        ("IndexError", lambda: oa.ctl_read(blk, 0, 4096)),
        ("IndexError", lambda: oa.ctl_read(blk, -1)),
        ("OSError", lambda: oa.ctl_format(m)),
        ("TypeError", lambda: oa.ctl_begin(b"x" * 256)),
    ]
    for want, f in bad:
        try:
            f()
        except Exception as e:
            assert type(e).__name__ == want, (want, type(e).__name__, e)
        else:
            raise AssertionError("no %s from %s" % (want, f))
    print("ok %d.%d %s" % (sys.version_info[0], sys.version_info[1], oa.ABI))
""")


class AtomicsTest(unittest.TestCase):
    def test_one_file_loads_in_every_interpreter(self):
        """The same .so, unchanged, in 3.8 ... 3.13: works, and every misuse
        raises (a crash would be a nonzero exit)."""
        pys = need(self, "3.8", "3.9", "3.10", "3.11", "3.12", "3.13")
        for xy, py in zip(("3.8", "3.9", "3.10", "3.11", "3.12", "3.13"), pys):
            with self.subTest(python=xy):
                r = subprocess.run([py, "-s", "-c", EVERY_PY, BUILD, SO], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.strip(), "ok %s abi3, Py_LIMITED_API 0x03080000" % xy)

    def test_client_finds_it_beside_the_daemon(self):
        """Outside a worker, omnipkg.isolation.omnipkg_atomic is found beside
        the omnipkgd binary ($OMNIPKGD) and is the module omnipkg_atomic."""
        (py,) = need(self, "3.11")
        code = textwrap.dedent("""
            import sys
            try:
                import omnipkg_atomic
                raise SystemExit("found on sys.path: %s" % omnipkg_atomic.__file__)
            except ImportError:
                pass
            from omnipkg.isolation import omnipkg_atomic as oa
            import omnipkg_atomic
            assert oa is omnipkg_atomic and sys.modules["omnipkg.isolation.omnipkg_atomic"] is oa
            print(oa.__file__)
        """)
        r = run(py, code, env={"PYTHONPATH": SRC_PY, "OMNIPKGD": os.path.join(BUILD, "omnipkgd"),
                               "OMNIPKG_RUNTIME_DIR": "/nonexistent"})
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        self.assertEqual(os.path.realpath(r.stdout.strip()), os.path.realpath(SO))
        # nowhere to be found: an ImportError that says where it looked
        r = run(py, "import omnipkg.isolation.omnipkg_atomic",
                env={"PYTHONPATH": SRC_PY, "OMNIPKGD": "/nonexistent/omnipkgd",
                     "OMNIPKG_RUNTIME_DIR": "/nonexistent", "PATH": "/usr/bin:/bin"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ImportError: omnipkg_atomic (the compiled atomics) not found", r.stderr)
        self.assertIn("/nonexistent/omnipkg_atomic.abi3.so (absent)", r.stderr)


class WorkerAtomicsTest(unittest.TestCase):
    """Against a real daemon: the extension reaches its workers, and
    workers of two interpreters share words in one segment."""

    def setUp(self):
        why = harness.DaemonFixture.available()
        if why:
            if os.environ.get("CI") == "true":
                self.fail(why)
            self.skipTest(why)
        self.py9, self.py13 = need(self, "3.9", "3.13")
        self.d = harness.DaemonFixture()
        self.d.start()
        self.c = DaemonClient(socket_path=self.d.socket, timeout=300, auto_start=False)

    def tearDown(self):
        self.c.close()
        self.assertEqual(self.d.stop(), [])

    def segment(self, name, size):
        r = self.c.call("shm_create", name=name, size=size)
        self.assertTrue(r.get("ok"), r)
        return r["segment"]["path"]

    def jobs(self, code_for):
        """Runs code_for(i, python) in four workers at once (3.9 and 3.13,
        two of each by tag); returns their replies."""
        specs = [(0, self.py9, "a"), (1, self.py9, "b"), (2, self.py13, "a"), (3, self.py13, "b")]
        replies = [None] * len(specs)

        def one(i, py, tag):
            replies[i] = self.c.execute("base", code_for(i, py), python_exe=py, worker_tag=tag)
        threads = [threading.Thread(target=one, args=s) for s in specs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        for r in replies:
            self.assertIsNotNone(r, "a job did not come back")
            self.assertTrue(r["success"], r.get("traceback") or r.get("error"))
        return replies

    def test_workers_import_it_from_the_runtime_dir(self):
        code = textwrap.dedent("""
            import sys, omnipkg_atomic
            from omnipkg.isolation import omnipkg_atomic as alias
            result = {"file": omnipkg_atomic.__file__, "same": alias is omnipkg_atomic,
                      "py": "%d.%d" % sys.version_info[:2]}
        """)
        for py, xy in ((self.py9, "3.9"), (self.py13, "3.13")):
            r = self.c.execute("base", code, python_exe=py)
            self.assertTrue(r["success"], r.get("traceback"))
            self.assertEqual(r["py"], xy)
            self.assertTrue(r["same"])
            self.assertEqual(r["file"], os.path.join(self.d.runtime, "worker", "client",
                                                     "omnipkg_atomic.abi3.so"))

    # Four processes meet at a start line (a counter in the segment), then
    # each does its share on the word at offset 64; odd ones use raw
    # addresses, even ones the buffer form.
    START = textwrap.dedent("""
        import ctypes, mmap, os, time
        import omnipkg_atomic as oa
        fd = os.open(%(path)r, os.O_RDWR)
        m = mmap.mmap(fd, 0)
        os.close(fd)
        oa.add64_buf(m, 0, 1)
        end = time.monotonic() + 60
        while oa.load64_buf(m, 0) < 4 and time.monotonic() < end:
            time.sleep(0.0002)
        buf = (ctypes.c_char * len(m)).from_buffer(m)
        addr = ctypes.addressof(buf) + 64
    """)

    def test_add64_from_two_interpreters_sums_exactly(self):
        path = self.segment("counter", 4096)
        n = 1000000
        body = textwrap.dedent("""
            if %(raw)s:
                add = oa.add64
                for _ in range(%(n)d):
                    add(addr, 1)
            else:
                add = oa.add64_buf
                for _ in range(%(n)d):
                    add(m, 64, 1)
            del buf
            m.close()
        """)
        self.jobs(lambda i, py: (self.START + body) % {"path": path, "n": n, "raw": i % 2 == 1})
        with open(path, "rb") as f:
            f.seek(64)
            total = int.from_bytes(f.read(8), sys.byteorder, signed=True)
        self.assertEqual(total, 4 * n)

    def test_cas_writers_lose_no_update(self):
        path = self.segment("cas", 4096)
        n = 100000
        body = textwrap.dedent("""
            done = failed = 0
            while done < %(n)d:
                old = oa.load64(addr) if %(raw)s else oa.load64_buf(m, 64)
                if (oa.cas64(addr, old, old + 1) if %(raw)s else oa.cas64_buf(m, 64, old, old + 1)):
                    done += 1
                else:
                    failed += 1
            del buf
            m.close()
            result = {"failed": failed}
        """)
        replies = self.jobs(lambda i, py: (self.START + body) % {"path": path, "n": n,
                                                                 "raw": i % 2 == 1})
        with open(path, "rb") as f:
            f.seek(64)
            total = int.from_bytes(f.read(8), sys.byteorder, signed=True)
        self.assertEqual(total, 4 * n)
        sys.stderr.write("\n  CAS failures under contention: %s\n"
                         % [r["failed"] for r in replies])


if __name__ == "__main__":
    unittest.main()
