"""Lock-free shared state measured from Python: omnipkg_atomic's round
trips (cas64, load64, cas64 on a buffer), and control block reads (p50 and
p99 with 0, 1 and 4 writers running) and writes per second (1, 2 and 4
writers), in atomic mode (the seqlock of omnipkg.h) beside the file-lock
"standard mode" (the same block, record and processes, with flock), and
beside omnipkg 3.4.1's SharedStateMonitor (bench/py/peer_atomics.py, run
with its interpreter in a private HOME and TMPDIR).

Stdlib only.  Starts its own omnipkgd on a private runtime dir (the blocks
are its segments); readers and writers are processes of this interpreter.
Each record is one word repeated, and every read checks that its copy is
whole.  Writes results/atomics.json.

    OMNI_BUILD         the build dir holding omnipkgd and omnipkg_atomic.abi3.so
    OMNI_PEER_PYTHON   omnipkg 3.4.1's interpreter (default .venv-bench/py311/bin/python)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import ours  # noqa: E402  (its Daemon)

from omnipkg import ctlblock  # noqa: E402  (ours.py put src/python on sys.path)

BUILD = ours.BUILD
RECORD = 64                     # bytes: 8 words, all the same
WORDS = RECORD // 8

# A writer process: PATH STOPFILE SECONDS.  Writes whole records (the next
# count in every word) until STOPFILE exists or SECONDS passed; prints its
# count of writes and the seconds it wrote for.
WRITER = r"""
import os, struct, sys, time
sys.path[:0] = [sys.argv[4], sys.argv[5]]
from omnipkg.ctlblock import ControlBlock
cb = ControlBlock(sys.argv[1])
stop, limit = sys.argv[2], float(sys.argv[3])
pack, unpack, n = struct.Struct("<q").pack, struct.Struct("<q").unpack_from, 0
print("ready", flush=True)
t0 = time.perf_counter()
end = t0 + limit
while True:
    with cb.writing() as w:
        w.record[:] = pack(unpack(w.record, 0)[0] + 1) * %d
    n += 1
    if not n & 255 and (os.path.exists(stop) or time.perf_counter() > end):
        break
print(n, time.perf_counter() - t0, flush=True)
""" % WORDS


def start_writers(path, k, seconds, tmp):
    stop = os.path.join(tmp, "stop-%d-%f" % (k, time.time()))
    procs = [subprocess.Popen([sys.executable, "-s", "-c", WRITER, path, stop, str(seconds),
                               os.path.join(common.REPO, "src", "python"), BUILD],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
             for _ in range(k)]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("a writer did not start")
    return stop, procs


def stop_writers(stop, procs):
    open(stop, "w").close()
    out = []
    for p in procs:
        o, _ = p.communicate(timeout=60)
        if p.returncode != 0:
            raise RuntimeError("a writer failed (%s)" % p.returncode)
        n, secs = o.split()
        out.append((int(n), float(secs)))
    os.unlink(stop)
    return out


def atomics_rows(oa, n):
    """Per-call round trips from Python, as means over batches of 1000."""
    import ctypes
    import mmap
    m = mmap.mmap(-1, 4096)
    buf = (ctypes.c_char * 4096).from_buffer(m)
    addr = ctypes.addressof(buf)
    rows = []
    cas, load, cas_buf = oa.cas64, oa.load64, oa.cas64_buf
    for name, fn in (("atomic_cas64_python", lambda: cas(addr, 0, 0)),
                     ("atomic_load64_python", lambda: load(addr)),
                     ("atomic_cas64_buf_python", lambda: cas_buf(m, 0, 0, 0))):
        if not fn() and name != "atomic_load64_python":
            raise RuntimeError("wrong answer: %s of an expected value failed" % name)
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            for _ in range(100):
                fn(); fn(); fn(); fn(); fn(); fn(); fn(); fn(); fn(); fn()  # noqa: E702
            samples.append((time.perf_counter() - t0) / 1000)
        rows.append(common.row(name, samples, extra={"batch": 1000}))
    # the Python loop and lambda alone, for reference
    nop = lambda: None  # noqa: E731
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        for _ in range(100):
            nop(); nop(); nop(); nop(); nop(); nop(); nop(); nop(); nop(); nop()  # noqa: E702
        samples.append((time.perf_counter() - t0) / 1000)
    rows.append(common.row("python_call_overhead", samples, extra={"batch": 1000}))
    del buf
    m.close()
    return rows


def read_rows(cb, mode, seconds, tmp):
    """Read latency with 0, 1 and 4 writers writing all the while: every
    read of `seconds` of reading is a sample."""
    rows, ref = [], None
    clock = time.perf_counter
    for k in (0, 1, 4):
        stop, procs = start_writers(cb.path, k, 120, tmp) if k else (None, [])
        samples, bad = [], 0
        try:
            g0 = cb.read(0, 0).generation
            end = time.monotonic() + 30
            while k and cb.read(0, 0).generation < g0 + 100 * k:   # all of them writing
                if time.monotonic() > end:
                    raise RuntimeError("writers did not get going")
                time.sleep(0.001)
            g1 = cb.read(0, 0).generation
            # how much of the time a write is in progress: what a reader can meet
            held = sum(cb.version() & 1 for _ in range(20000)) / 20000.0
            end = clock() + seconds
            while True:
                t0 = clock()
                s = cb.read(0, RECORD)
                t1 = clock()
                samples.append(t1 - t0)
                if s.data != s.data[:8] * WORDS or s.torn:
                    bad += 1
                if t1 > end:
                    break
            g2 = s.generation
        finally:
            if procs:
                stop_writers(stop, procs)
        if bad:
            raise RuntimeError("wrong answer: %d torn reads in %s mode" % (bad, mode))
        name = "ctl_read_%s_%dw" % (mode, k)
        r = common.row(name, samples, ref=ref, extra={
            "writers": k, "mode": mode, "seconds": seconds, "held_share": held,
            "writes_meanwhile": g2 - g1, "reads": len(samples)})
        if k == 0:
            ref = (name, r["p50"])
        rows.append(r)
    return rows


def write_rows(cb, mode, seconds, tmp):
    """Writes per second, all writers together, with 1, 2 and 4 writers."""
    rows = []
    for k in (1, 2, 4):
        before = cb.read(0, 8)
        stop, procs = start_writers(cb.path, k, seconds, tmp)
        time.sleep(seconds)
        done = stop_writers(stop, procs)
        after = cb.read(0, 8)
        total = sum(x[0] for x in done)
        count = int.from_bytes(after.data, sys.byteorder) - int.from_bytes(before.data, sys.byteorder)
        if count != total or after.generation - before.generation != total:
            raise RuntimeError("wrong answer: %d writes counted, %d made (%s mode)"
                               % (count, total, mode))
        rate = sum(n / s for n, s in done)
        rows.append(common.value_row("ctl_writes_%s_%dw" % (mode, k), rate, "1/s",
                                     extra={"writers": k, "mode": mode, "writes": total}))
    return rows


PEER_ROWS = ["omnipkg_shared_state_read_%dw" % k for k in (0, 1, 4)] + \
    ["omnipkg_shared_state_writes_%dw" % k for k in (1, 2, 4)]


def peer_rows(read_s, write_s):
    """omnipkg 3.4.1's rows, from bench/py/peer_atomics.py in a sandbox as
    bench/run.sh gives its daemon: its import writes under TMPDIR and HOME."""
    py = os.environ.get("OMNI_PEER_PYTHON") or os.path.join(common.REPO, ".venv-bench", "py311",
                                                            "bin", "python")
    if not os.access(py, os.X_OK):
        raise RuntimeError("omnipkg 3.4.1 is not installed (%s missing; bench/setup_peers.sh)" % py)
    box = tempfile.mkdtemp(prefix="omnibench-peer-atomics-")
    try:
        home = os.path.join(box, "home")
        for d in ("tmp", "run", "home"):
            os.mkdir(os.path.join(box, d), 0o700)
        env = {k: v for k, v in os.environ.items()
               if k not in ("OMNIPKG_RUNTIME_DIR", "OMNIPKG_SOCKET", "OMNIPKG_HOME", "PYTHONPATH")}
        env.update(HOME=home, TMPDIR=os.path.join(box, "tmp"), XDG_RUNTIME_DIR=os.path.join(box, "run"),
                   XDG_CONFIG_HOME=os.path.join(home, ".config"),
                   XDG_DATA_HOME=os.path.join(home, ".local", "share"),
                   XDG_CACHE_HOME=os.path.join(home, ".cache"), OMNIPKG_LANG="en")
        r = subprocess.run([py, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "peer_atomics.py"), str(read_s), str(write_s)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=env, cwd=box, timeout=300)
        lines = r.stdout.strip().splitlines()
        for ln in lines[:-1]:
            print(ln, flush=True)
        if r.returncode != 0 or not lines:
            raise RuntimeError("peer_atomics.py failed (%s): %s" % (r.returncode, r.stderr[-300:]))
        rows = json.loads(lines[-1])
        for row in rows:
            row["peer"] = "omnipkg 3.4.1"
        return rows
    finally:
        shutil.rmtree(box, ignore_errors=True)


def main():
    rows = []
    tmp = None
    versions = {"python": sys.version.split()[0]}

    def section(names, fn, *args):
        try:
            rows.extend(fn(*args))
        except Exception as e:
            for nm in names:
                rows.append(common.unavailable(nm, "%s: %s" % (type(e).__name__, str(e)[:300])))

    d = ours.Daemon()
    try:
        d.start()
        tmp = d.tmp
        c = d.client()
        from omnipkg import atomics
        oa = atomics.load(d.socket)
        versions["omnipkg_atomic"] = oa.ABI
        section(["atomic_cas64_python", "atomic_load64_python", "atomic_cas64_buf_python",
                 "python_call_overhead"], atomics_rows, oa, common.iters(300, 50))
        for mode in ("atomic", "filelock"):
            cb = c.control_block("bench-" + mode, record_size=RECORD, mode=mode)
            section(["ctl_read_%s_%dw" % (mode, k) for k in (0, 1, 4)], read_rows, cb, mode,
                    common.iters(0.5, 0.2), tmp)
            section(["ctl_writes_%s_%dw" % (mode, k) for k in (1, 2, 4)], write_rows, cb, mode,
                    common.iters(1.0, 0.3), tmp)
            cb.close()
        c.close()
    except Exception as e:
        rows.append(common.unavailable("omnipkgd", "could not start: %s" % e))
    finally:
        d.stop()
    section(PEER_ROWS, peer_rows, common.iters(0.5, 0.2), common.iters(1.0, 0.3))
    common.write("atomics", rows, versions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
