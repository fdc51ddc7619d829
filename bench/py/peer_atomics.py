"""omnipkg 3.4.1's shared state, measured the way bench/py/atomics.py
measures ours: its SharedStateMonitor (a 128-byte block in POSIX shared
memory and a filelock.FileLock beside it), read with read_state() while 0,
1 and 4 writers write, and written with try_lock_and_validate() +
commit_and_release() by 1, 2 and 4 writers.  Its compiled atomics are not
in its wheel, so this is the path every install of it takes.

Run by bench/py/atomics.py with omnipkg 3.4.1's interpreter
(.venv-bench/py311, bench/setup_peers.sh) in a private HOME and TMPDIR:

    peer_atomics.py READ_SECONDS WRITE_SECONDS    -> rows as JSON, last line
    peer_atomics.py writer NAME STOPFILE SECONDS  (a writer process)
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from omnipkg.isolation import worker_daemon as wd  # noqa: E402


def writer(name, stop, seconds):
    m = wd.SharedStateMonitor(name)
    print("ready", flush=True)
    n = fails = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        v = m.get_version()
        if v % 2 == 0 and m.try_lock_and_validate(v):
            m.commit_and_release(v + 2)
            n += 1
        else:
            fails += 1
        if not (n + fails) & 63 and (os.path.exists(stop) or time.perf_counter() > end):
            break
    print(n, time.perf_counter() - t0, fails, flush=True)
    m.close()


def writers(name, k, seconds, tag):
    stop = os.path.join(os.environ.get("TMPDIR", "/tmp"), "stop-%s-%d" % (tag, k))
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "writer", name, stop,
                               str(seconds)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              text=True) for _ in range(k)]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("a writer did not start")
    return stop, procs


def finish(stop, procs):
    open(stop, "w").close()
    out = []
    for p in procs:
        o, _ = p.communicate(timeout=120)
        n, secs, fails = o.split()
        out.append((int(n), float(secs), int(fails)))
    os.unlink(stop)
    return out


def main(read_s, write_s):
    name = "omnibench_ctl_%d" % os.getpid()
    m = wd.SharedStateMonitor(name, create=True)
    rows, ref = [], None
    try:
        clock = time.perf_counter
        for k in (0, 1, 4):
            stop, procs = writers(name, k, 120, "r") if k else (None, [])
            v0 = m.get_version()
            end = time.monotonic() + 30
            while k and m.get_version() < v0 + 200 * k:
                if time.monotonic() > end:
                    raise RuntimeError("writers did not get going")
                time.sleep(0.001)
            samples = []
            end = clock() + read_s
            while True:
                t0 = clock()
                m.read_state()
                t1 = clock()
                samples.append(t1 - t0)
                if t1 > end:
                    break
            if procs:
                finish(stop, procs)
            r = common.row("omnipkg_shared_state_read_%dw" % k, samples, ref=ref,
                           extra={"writers": k, "reads": len(samples)})
            if k == 0:
                ref = (r["name"], r["p50"])
            rows.append(r)
        for k in (1, 2, 4):
            v0 = m.get_version()
            stop, procs = writers(name, k, write_s, "w")
            time.sleep(write_s)
            done = finish(stop, procs)
            total = sum(x[0] for x in done)
            if m.get_version() - v0 != 2 * total:
                raise RuntimeError("wrong answer: version moved by %d for %d writes"
                                   % (m.get_version() - v0, total))
            rows.append(common.value_row("omnipkg_shared_state_writes_%dw" % k,
                                         sum(n / s for n, s, _ in done), "1/s",
                                         extra={"writers": k, "writes": total,
                                                "failed_claims": sum(x[2] for x in done)}))
    finally:
        m.close()
        m.unlink()
    print(json.dumps(rows))


if __name__ == "__main__":
    if sys.argv[1:2] == ["writer"]:
        writer(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        main(float(sys.argv[1]), float(sys.argv[2]))
