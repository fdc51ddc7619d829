"""Control blocks against the real daemon (omnipkg.ctlblock, omnipkg.h):
a block is a segment like any other; writers in processes of 3.9 and 3.13
lose no update while readers never see a torn record (the record carries
its own checksum); a writer SIGKILLed inside its critical section is
recovered within a bounded time, readers see the torn flag, and nothing
hangs; execute_optimistic_write claims in the worker, retries conflicts,
always releases, and survives its worker's death; the file-lock
"standard mode" does the same jobs.

A missing interpreter or numpy bubble skips (fails under CI=true).
"""

import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import unittest

import harness
from test_daemon import link_bubble
from test_python_client_unit import need_numpy

from omnipkg import DaemonClient, ctlblock

BUILD = harness.build_dir()
SRC_PY = os.path.join(harness.REPO, "src", "python")
PYS = harness.find_pythons(("3.9", "3.11", "3.13"))
BOUND = 5.0          # seconds within which a dead writer's claim must be gone

# A record: counter, 6 words derived from it and from the writer, and a
# CRC of those 56 bytes.  A reader that copies half of one write and half
# of another gets a CRC that does not match.
RECORD = struct.Struct("<q6qQ")

# The process side of the tests, for any interpreter: ROLE PATH ARGS...
CHILD = textwrap.dedent(r"""
    import os, struct, sys, time, zlib
    from omnipkg.ctlblock import ControlBlock
    R = struct.Struct("<q6qQ")
    role, path = sys.argv[1], sys.argv[2]
    cb = ControlBlock(path)

    def make(count, who):
        body = struct.pack("<q6q", count, *[count * (k + 3) + who for k in range(6)])
        return body + struct.pack("<Q", zlib.crc32(body))

    if role == "writer":              # N increments of the counter, field by field
        who, n = int(sys.argv[3]), int(sys.argv[4])
        for _ in range(n):
            with cb.writing(timeout=60) as w:
                count = R.unpack_from(w.record, 0)[0]
                rec = make(count + 1, who)
                for k in range(0, R.size, 8):   # a reader overlapping this must not keep its copy
                    w.record[k:k + 8] = rec[k:k + 8]
        print("done")
    elif role == "reader":            # until the counter reaches N: every copy whole
        n = int(sys.argv[3])
        end = time.monotonic() + 60
        reads = bad = 0
        last = 0
        while last < n and time.monotonic() < end:
            s = cb.read(0, R.size, timeout=60)
            rec = R.unpack(s.data)
            reads += 1
            if rec[0] and (zlib.crc32(s.data[:56]) != rec[7] or rec[0] < last or s.torn):
                bad += 1
            last = rec[0]
        print(reads, bad, last)
    elif role == "big-writer":        # records of one word repeated: any mix shows
        n = int(sys.argv[3])
        words = cb.record_size // 8
        for _ in range(n):
            with cb.writing(timeout=60) as w:
                count = struct.unpack_from("<q", w.record, 0)[0] + 1
                w.record[:] = struct.pack("<q", count) * words
        print("done")
    elif role == "big-reader":
        n = int(sys.argv[3])
        end = time.monotonic() + 60
        reads = bad = last = 0
        while last < n and time.monotonic() < end:
            s = cb.read(timeout=60)
            reads += 1
            if s.data != s.data[:8] * (len(s.data) // 8):
                bad += 1
            last = struct.unpack_from("<q", s.data, 0)[0]
        print(reads, bad, last)
    elif role == "hold":              # claims, writes half a record, waits to be killed
        w = cb.begin(timeout=60)
        w.record[0:28] = b"\xee" * 28
        print("held", flush=True)
        time.sleep(600)
    elif role == "wait-read":         # a reader that waits for the holder
        t0 = time.monotonic()
        s = cb.read(0, R.size, timeout=60)
        print(s.torn, s.torn_count, s.seq, round(time.monotonic() - t0, 3))
    elif role == "wait-write":        # a writer that waits for the holder
        t0 = time.monotonic()
        with cb.writing(timeout=60) as w:
            w.record[0:R.size] = make(100, 9)
            print(w.prev_torn, round(time.monotonic() - t0, 3))
""")


def need(test, *versions):
    missing = [v for v in versions if v not in PYS]
    if missing:
        msg = "python %s not installed" % ", ".join(missing)
        if os.environ.get("CI") == "true":
            test.fail(msg)
        test.skipTest(msg)
    return [PYS[v] for v in versions]


class CtlBlockTest(unittest.TestCase):
    def setUp(self):
        why = harness.DaemonFixture.available()
        if why:
            if os.environ.get("CI") == "true":
                self.fail(why)
            self.skipTest(why)
        if not os.path.isfile(os.path.join(BUILD, "omnipkg_atomic.abi3.so")):
            self.fail("omnipkg_atomic.abi3.so not built in %s" % BUILD)
        self.d = harness.DaemonFixture()
        if self._testMethodName == "test_optimistic_write_with_arrays":
            need(self, "3.11")
            link_bubble(self, self.d, "3.11", "numpy", "1.26.4")
        self.d.start()
        self.c = DaemonClient(socket_path=self.d.socket, timeout=120, auto_start=False)
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()
        self.c.close()
        self.assertEqual(self.d.stop(), [])

    def spawn(self, python, *args):
        env = dict(self.d.env, PYTHONPATH=SRC_PY)
        p = subprocess.Popen([python, "-s", "-c", CHILD] + [str(a) for a in args],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        self.procs.append(p)
        return p

    def finish(self, p, timeout=90):
        out, err = p.communicate(timeout=timeout)
        self.assertEqual(p.returncode, 0, err)
        return out.split()

    def block(self, name, mode=None, record_size=256):
        cb = self.c.control_block(name, record_size=record_size, mode=mode)
        self.addCleanup(cb.close)
        return cb

    # ------------------------------------------------------------ the block

    def test_layout_is_the_headers(self):
        """ctlblock's offsets are those the C header compiles to."""
        cb = self.block("layout")
        oa = sys.modules["omnipkg_atomic"]
        self.assertEqual({k: tuple(v) for k, v in oa.CTL_LAYOUT.items()}, ctlblock.LAYOUT)
        self.assertEqual((oa.CTL_HEADER_SIZE, oa.CTL_MAGIC, oa.CTL_PID_SHIFT, oa.CTL_VERSION),
                         (ctlblock.HEADER_SIZE, ctlblock.MAGIC, ctlblock.PID_SHIFT,
                          ctlblock.VERSION))
        with open(cb.path, "rb") as f:
            self.assertEqual(f.read(8), b"OMNICTL1" if sys.byteorder == "little" else b"1LTCINMO")
        h = cb.header()
        self.assertEqual((h["version"], h["record_size"], h["seq"], h["flags"]), (1, 256, 0, 0))

    def test_a_block_is_a_segment(self):
        cb = self.block("shared-state")
        r = self.d.cli("shm", "ls")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("shared-state", r.stdout)
        (seg,) = [s for s in self.c.shm_list()["segments"] if s["name"] == "shared-state"]
        self.assertEqual((seg["size"], seg["persist"]), (128 + 256, True))
        # opened again by name, also by another client, it is the same block
        cb.write(b"abc")
        with DaemonClient(socket_path=self.d.socket, auto_start=False) as c2:
            other = c2.control_block("shared-state", create=False)
            self.assertEqual(other.read(0, 3).data, b"abc")
            other.close()
        with self.assertRaises(ctlblock.ControlBlockError):
            self.c.control_block("shared-state", mode="filelock")
        with self.assertRaises(Exception):
            self.c.control_block("missing", create=False)

    def test_write_read_and_claims(self):
        cb = self.block("basic")
        self.assertEqual(cb.write(b"hello", 10), 2)
        s = cb.read(10, 5)
        self.assertEqual((s.data, s.seq, s.generation, s.torn, s.torn_count),
                         (b"hello", 2, 1, False, 0))
        with cb.writing() as w:
            self.assertEqual(w.seq >> ctlblock.PID_SHIFT, os.getpid())
            self.assertEqual(cb.header()["owner_pid"], os.getpid())
            with self.assertRaises(BlockingIOError):
                cb.read(timeout=0)
            with self.assertRaises(TimeoutError):
                cb.begin(timeout=0.05)
            w.record[0:2] = b"ok"
        with self.assertRaises(ctlblock.ControlBlockConflict):
            cb.begin(expected=2)
        with cb.begin(expected=4) as w:
            pass
        with self.assertRaises(ValueError):
            with cb.writing():
                raise ValueError("gave up mid-write")
        s = cb.read()
        self.assertEqual((s.seq, s.generation, s.torn, s.torn_count), (8, 3, True, 1))
        with self.assertRaises(IndexError):
            cb.write(b"x" * 257)
        with self.assertRaises(IndexError):
            cb.read(250, 7)
        self.assertEqual(cb.header()["seq"], 8)      # nothing left held

    # ------------------------------------------------------------ concurrency

    def writers_and_readers(self, mode):
        py9, py13 = need(self, "3.9", "3.13")
        cb = self.block("rw-" + mode, mode=mode)
        n = 4000 if mode == "filelock" else 10000
        readers = [self.spawn(py, "reader", cb.path, 4 * n) for py in (py9, py13)]
        writers = [self.spawn(py, "writer", cb.path, i, n)
                   for i, py in enumerate((py9, py9, py13, py13))]
        for p in writers:
            self.assertEqual(self.finish(p), ["done"])
        for p in readers:
            reads, bad, last = map(int, self.finish(p))
            self.assertEqual(bad, 0, "a reader saw a torn record")
            self.assertEqual(last, 4 * n)
            self.assertGreater(reads, 0)
        s = cb.read(0, RECORD.size)
        self.assertEqual(RECORD.unpack(s.data)[0], 4 * n)
        self.assertEqual((s.generation, s.seq, s.torn_count), (4 * n, 8 * n, 0))

    def test_writers_lose_no_update_readers_see_no_torn_record(self):
        self.writers_and_readers("atomic")

    def test_big_records_are_never_torn(self):
        """Records long enough that copying one takes as long as writing
        one: a reader's copy often overlaps a write, and must be thrown
        away each time."""
        py9, py13 = need(self, "3.9", "3.13")
        cb = self.block("big", record_size=256 << 10)
        n = 1500
        readers = [self.spawn(py, "big-reader", cb.path, 2 * n) for py in (py9, py13)]
        writers = [self.spawn(py, "big-writer", cb.path, n) for py in (py9, py13)]
        for p in writers:
            self.assertEqual(self.finish(p), ["done"])
        for p in readers:
            reads, bad, last = map(int, self.finish(p))
            self.assertEqual((bad, last), (0, 2 * n), "a reader kept a torn copy")
        self.assertEqual(cb.read(0, 8).generation, 2 * n)

    def test_filelock_mode_does_the_same(self):
        self.writers_and_readers("filelock")

    # ------------------------------------------------------------ death

    def killed_holder(self, mode):
        py9, py11, py13 = need(self, "3.9", "3.11", "3.13")
        cb = self.block("kill-" + mode, mode=mode)
        cb.write(RECORD.pack(5, 0, 0, 0, 0, 0, 0, 0))

        # a holder killed while readers wait: they come back, seeing torn
        holder = self.spawn(py13, "hold", cb.path)
        self.assertEqual(holder.stdout.readline().strip(), "held")
        waiting = [self.spawn(py, "wait-read", cb.path) for py in (py9, py11)]
        time.sleep(0.3)
        for p in waiting:
            self.assertIsNone(p.poll(), "a reader did not wait for a live writer")
        holder.send_signal(signal.SIGKILL)
        for p in waiting:
            torn, count, seq, took = self.finish(p, timeout=60)
            self.assertEqual((torn, count), ("True", "1"))
            self.assertLess(float(took), 0.3 + BOUND)
        s = cb.read(0, 32)
        self.assertTrue(s.torn)
        self.assertEqual(s.data[:28], b"\xee" * 28)       # what the dead writer left
        self.assertEqual(cb.header()["owner_pid"], 0)

        # a holder killed while a writer waits: it proceeds, told of the tear
        holder = self.spawn(py9, "hold", cb.path)
        self.assertEqual(holder.stdout.readline().strip(), "held")
        writer = self.spawn(py13, "wait-write", cb.path)
        time.sleep(0.3)
        self.assertIsNone(writer.poll(), "a writer did not wait for a live writer")
        t0 = time.monotonic()
        holder.send_signal(signal.SIGKILL)
        prev_torn, _ = self.finish(writer, timeout=60)
        self.assertLess(time.monotonic() - t0, BOUND)
        self.assertEqual(prev_torn, "True")
        s = cb.read(0, RECORD.size)
        self.assertEqual((s.torn, s.torn_count, RECORD.unpack(s.data)[0]), (False, 2, 100))

    def test_writer_killed_mid_write(self):
        self.killed_holder("atomic")

    def test_filelock_writer_killed_mid_write(self):
        self.killed_holder("filelock")

    # ------------------------------------------------------------ execute_optimistic_write

    def test_optimistic_write_in_workers(self):
        py9, py13 = need(self, "3.9", "3.13")
        cb = self.block("occ")
        code = textwrap.dedent("""
            import struct, sys
            n = struct.unpack_from("<q", control_block.record, 0)[0]
            struct.pack_into("<q", control_block.record, 0, n + 1)
            # (as two numbers: JSON through the daemon carries 53 bits exactly)
            result = {"seen": n, "py": "%d.%d" % sys.version_info[:2],
                      "holder": control_block.seq >> 40, "seq": control_block.seq & (2**40 - 1)}
        """)
        for i, py in enumerate((py9, py13, py9)):
            out, meta, retries = self.c.execute_optimistic_write("base", code, "occ", None,
                                                                 python_exe=py)
            self.assertIsNone(out)
            self.assertEqual((meta["success"], meta["seen"], retries), (True, i, 0))
            self.assertEqual(meta["holder"], meta["worker_pid"])
            self.assertEqual(meta["seq"], 2 * i + 1)
        s = cb.read(0, 8)
        self.assertEqual((struct.unpack("<q", s.data)[0], s.seq, s.torn), (3, 6, False))

        # the job raised: the claim is released anyway, the write marked torn
        with self.assertRaises(RuntimeError) as e:
            self.c.execute_optimistic_write("base", "raise KeyError('x')", "occ", None,
                                            python_exe=py9)
        self.assertIn("KeyError", str(e.exception))
        s = cb.read(0, 8, timeout=0)
        self.assertEqual((s.seq, s.torn, s.torn_count), (8, True, 1))

        # the worker dies inside the critical section: the next write goes through
        kill = "control_block.record[0:4] = b'\\xff' * 4\nimport os\nos.kill(os.getpid(), 9)"
        with self.assertRaises(RuntimeError) as e:
            self.c.execute_optimistic_write("base", kill, "occ", None, python_exe=py13)
        self.assertIn("signal 9", str(e.exception))
        t0 = time.monotonic()
        s = cb.read(0, 8, timeout=BOUND)
        self.assertLess(time.monotonic() - t0, BOUND)
        self.assertEqual((s.torn, s.torn_count), (True, 2))
        _, meta, retries = self.c.execute_optimistic_write("base", code, "occ", None,
                                                           python_exe=py13)
        self.assertEqual(retries, 0)
        self.assertEqual(cb.read().torn, False)

    def test_daemon_recovers_its_dead_workers_block(self):
        """Nobody waits on the block: the daemon itself recovers the claim
        of the worker it saw die."""
        (py,) = need(self, "3.9")
        cb = self.block("reaped")
        kill = "control_block.record[0:4] = b'dead'\nimport os\nos.kill(os.getpid(), 9)"
        with self.assertRaises(RuntimeError):
            self.c.execute_optimistic_write("base", kill, "reaped", None, python_exe=py)
        end = time.monotonic() + BOUND
        while cb.header()["seq"] & 1 and time.monotonic() < end:
            time.sleep(0.01)
        h = cb.header()
        self.assertEqual((h["seq"], h["torn"], h["torn_count"], h["owner_pid"]), (4, 1, 1, 0))

    def test_optimistic_write_retries_a_conflict(self):
        (py,) = need(self, "3.11")
        cb = self.block("conflict")
        cb2 = self.c.control_block("conflict")
        self.addCleanup(cb2.close)
        c = self.c
        exec_ = c._exec
        moves = {"left": 2}

        def racing_exec(*a, **kw):
            # another writer gets in between the read of seq and the claim
            if moves["left"]:
                moves["left"] -= 1
                cb2.write(b"x")
            return exec_(*a, **kw)
        c._exec = racing_exec
        try:
            _, meta, retries = c.execute_optimistic_write(
                "base", "result = {'seq': control_block.seq & (2**40 - 1)}", "conflict", None,
                python_exe=py)
            self.assertEqual(retries, 2)
            self.assertEqual(meta["seq"], 5)
            moves["left"] = 10
            with self.assertRaises(RuntimeError) as e:
                c.execute_optimistic_write("base", "pass", "conflict", None, python_exe=py,
                                           max_retries=3)
            self.assertIn("Max retries exceeded", str(e.exception))
        finally:
            c._exec = exec_
        self.assertEqual(cb.read().seq & 1, 0)

    def test_concurrent_optimistic_writers_lose_no_update(self):
        py9, py13 = need(self, "3.9", "3.13")
        self.block("count")
        code = textwrap.dedent("""
            import struct
            n = struct.unpack_from("<q", control_block.record, 0)[0]
            struct.pack_into("<q", control_block.record, 0, n + 1)
        """)
        total = {"retries": 0}
        errors = []

        def run(py, tag):
            with DaemonClient(socket_path=self.d.socket, auto_start=False) as c:
                for _ in range(25):
                    try:
                        _, _, r = c.execute_optimistic_write("base", code, "count", None,
                                                             python_exe=py)
                        total["retries"] += r
                    except Exception as e:     # reported below
                        errors.append(e)
        threads = [threading.Thread(target=run, args=a)
                   for a in ((py9, "a"), (py13, "b"), (py9, "c"), (py13, "d"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        cb = self.c.control_block("count", create=False)
        self.addCleanup(cb.close)
        self.assertEqual(struct.unpack("<q", cb.read(0, 8).data)[0], 100)
        sys.stderr.write("\n  retries of 100 optimistic writes from 4 clients: %d\n"
                         % total["retries"])

    def test_optimistic_write_with_arrays(self):
        np = need_numpy(self)
        self.block("tensors")
        x = np.arange(12, dtype=np.float32).reshape(3, 4)
        code = textwrap.dedent("""
            import struct
            tensor_out[:] = tensor_in * 2
            struct.pack_into("<d", control_block.record, 0, float(tensor_in.sum()))
        """)
        out, meta, retries = self.c.execute_optimistic_write("numpy==1.26.4", code, "tensors", x,
                                                             python_exe="3.11")
        self.assertEqual((out.shape, out.dtype, retries), ((3, 4), np.float32, 0))
        self.assertTrue((out == x * 2).all())
        cb = self.c.control_block("tensors", create=False)
        self.addCleanup(cb.close)
        self.assertEqual(struct.unpack("<d", cb.read(0, 8).data)[0], 66.0)

    def test_filelock_block_in_workers(self):
        (py,) = need(self, "3.13")
        cb = self.block("std", mode="filelock")
        code = "control_block.record[0:3] = b'std'"
        _, meta, retries = self.c.execute_optimistic_write("base", code, "std", None, python_exe=py)
        self.assertEqual(retries, 0)
        s = cb.read(0, 3)
        self.assertEqual((s.data, s.seq, s.generation), (b"std", 2, 1))


if __name__ == "__main__":
    unittest.main()
