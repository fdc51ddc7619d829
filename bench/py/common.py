"""Shared helpers of the Python benchmark drivers (stdlib only, Python 3.9+).

Results go to $OMNI_RESULTS_DIR (default results/) as one JSON file per
driver, in the same shape bench.c writes for the C rows:

    {"benchmark": name, "quick": bool, "machine": {...}, "rows": [...]}

A measured row: name, unit "s", n, p50, p99, mean, min, max, and a
histogram of its samples (log-spaced bins) for the latency plots.  A row
that could not run: {"name", "status": "unavailable", "why"}.  Every
file carries the run id ($OMNI_BENCH_RUN) so the report never mixes runs.
"""

import json
import math
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def quick():
    q = os.environ.get("QUICK", "")
    return bool(q) and q != "0"


def iters(full, short):
    return short if quick() else full


def now():
    return time.perf_counter()


def pct(sorted_v, p):
    if not sorted_v:
        return 0.0
    idx = p * (len(sorted_v) - 1)
    lo = int(idx)
    if lo + 1 >= len(sorted_v):
        return sorted_v[-1]
    return sorted_v[lo] + (sorted_v[lo + 1] - sorted_v[lo]) * (idx - lo)


def histogram(sorted_v, bins=40):
    """Log-spaced bins over [min, max]: {"edges": [...], "counts": [...]}."""
    lo, hi = sorted_v[0], sorted_v[-1]
    if lo <= 0 or hi <= lo * 1.0001:
        return {"edges": [lo, hi if hi > lo else lo * 1.01 + 1e-9], "counts": [len(sorted_v)]}
    a, b = math.log(lo), math.log(hi)
    edges = [math.exp(a + (b - a) * i / bins) for i in range(bins + 1)]
    counts = [0] * bins
    for x in sorted_v:
        i = min(bins - 1, int((math.log(x) - a) / (b - a) * bins))
        counts[i] += 1
    return {"edges": edges, "counts": counts}


def row(name, samples, ref=None, extra=None):
    """A measured row from samples (seconds).  ref: (name, p50) of the row
    it is compared with in the same run, or None."""
    v = sorted(samples)
    r = {"name": name, "unit": "s", "n": len(v), "p50": pct(v, 0.5), "p99": pct(v, 0.99),
         "mean": sum(v) / len(v), "min": v[0], "max": v[-1], "hist": histogram(v)}
    if ref and ref[1] > 0:
        r.update(reference=ref[0], reference_p50=ref[1], ratio_p50=r["p50"] / ref[1])
    if extra:
        r.update(extra)
    line(r)
    return r


PIPE_BYTES = 64 << 20
PIPE_CODE = "arr_out[:] = arr_in * 3 + 1"


def array_pipeline(name, np, hop, n):
    """A 64 MB float64 array through three hops, hop(i, x) -> the next x
    (an execute_zero_copy of PIPE_CODE), for ours and omnipkg alike: warmed
    once, then n timed runs, each answer checked."""
    a = np.arange(PIPE_BYTES // 8, dtype=np.float64)
    want = ((float(a[-1]) * 3 + 1) * 3 + 1) * 3 + 1

    def run():
        x = a
        for i in range(3):
            x = hop(i, x)
        return x

    def check(out, first):
        if float(out[-1]) != want or (first and float(out[1]) != 40.0):
            raise RuntimeError("wrong answer: pipeline gave %r" % out[-3:])
    check(run(), True)   # warm: workers start, segments are made
    v = []
    for _ in range(n):
        t0 = now()
        out = run()
        v.append(now() - t0)
        check(out, False)
        del out
    return [row(name, v, extra={"bytes": PIPE_BYTES})]


def value_row(name, value, unit, extra=None):
    """A single measured value (memory in bytes, a count...)."""
    r = {"name": name, "unit": unit, "value": value}
    if extra:
        r.update(extra)
    if unit == "B":
        print("%-34s %10.2f MiB" % (name, value / 2**20), flush=True)
    else:
        print("%-34s %10g %s" % (name, value, unit), flush=True)
    return r


def unavailable(name, why):
    print("%-34s unavailable: %s" % (name, why), flush=True)
    return {"name": name, "status": "unavailable", "why": why}


def human(s):
    if s < 1e-3:
        return "%7.1f us" % (s * 1e6)
    if s < 1:
        return "%7.2f ms" % (s * 1e3)
    return "%7.3f s " % s


def line(r):
    s = "%-34s p50 %s  p99 %s  n %6d" % (r["name"], human(r["p50"]), human(r["p99"]), r["n"])
    if "ratio_p50" in r:
        s += "  %6.2f x %s" % (r["ratio_p50"], r["reference"])
    print(s, flush=True)


def _cmd(argv):
    try:
        return subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine(versions=None):
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    u = os.uname()
    m = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": "%s %s %s" % (u.sysname, u.release, u.machine),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": _cmd(["git", "rev-parse", "--short", "HEAD"]),
        # changes to the code measured; the results a run writes do not count
        "dirty": bool(_cmd(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!results", ":!BENCHMARKS.md"])),
        "python": "%s (%s)" % (platform.python_version(), sys.executable),
        "run": os.environ.get("OMNI_BENCH_RUN", ""),
    }
    if versions:
        m["versions"] = versions
    return m


def write(name, rows, versions=None):
    d = os.environ.get("OMNI_RESULTS_DIR") or os.path.join(REPO, "results")
    os.makedirs(d, exist_ok=True)
    doc = {"benchmark": name, "quick": quick(), "machine": machine(versions), "rows": rows}
    path = os.path.join(d, name + ".json")
    with open(path + ".part", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(path + ".part", path)
    print("  -> %s" % os.path.relpath(path, REPO), flush=True)


# ----------------------------------------------------------- /proc memory

def smaps_rollup(pid):
    """{"rss", "pss", "uss"} in bytes from /proc/PID/smaps_rollup, or None."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            kv = {}
            for ln in f:
                parts = ln.split()
                if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                    kv[parts[0][:-1]] = int(parts[1]) * 1024
    except OSError:
        return None
    return {"rss": kv.get("Rss", 0), "pss": kv.get("Pss", 0),
            "uss": kv.get("Private_Clean", 0) + kv.get("Private_Dirty", 0)}


def children(pid):
    """Direct children of pid (from /proc/*/stat)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(d))
    return out


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


MEM_WORKERS = (1, 4, 16)
MEM_CODE = ("import os, sys, numpy\n"
            "result = {'pid': os.getpid(), 'modules': len(sys.modules), "
            "'omnipkg_modules': len([m for m in sys.modules if m.startswith('omnipkg')])}")


def memory_rows(prefix, n, worker_pids, other_pids, daemon_pid, note, modules=None):
    """Rows for a pool of n idle numpy workers: the median worker's PSS,
    the PSS of the helper processes (zygotes, or whatever else the system
    keeps), the daemon's, and all of them together.  PSS divides each
    shared page among the processes that map it, so a worker forked from a
    zygote is charged its share of the zygote's pages and nothing is
    counted twice or left out."""
    def pss(pids):
        return sum((smaps_rollup(p) or {"pss": 0})["pss"] for p in pids)
    alive = [p for p in worker_pids if smaps_rollup(p)]
    if not alive:
        raise RuntimeError("none of the %d workers is alive" % n)
    per = sorted(pss([p]) for p in alive)
    other = pss(other_pids)
    d = pss([daemon_pid])
    extra = {"workers": n, "alive_workers": len(alive),
             "processes": len(alive) + len(other_pids) + 1, "note": note}
    if modules:     # what the workers had imported: [(modules, omnipkg modules)] per worker
        extra["worker_modules"] = sorted(modules)
    if len(alive) < n:
        extra["note"] += "; only %d of %d workers were still running (the others were " \
                         "evicted by the system's own worker limit)" % (len(alive), n)
    return [value_row("%s_mem_%dw_worker_pss" % (prefix, n), per[len(per) // 2], "B", extra),
            value_row("%s_mem_%dw_helpers_pss" % (prefix, n), other, "B", extra),
            value_row("%s_mem_%dw_daemon_pss" % (prefix, n), d, "B", extra),
            value_row("%s_mem_%dw_total_pss" % (prefix, n), sum(per) + other + d, "B", extra)]


LOAD_CLIENTS = (1, 2, 8, 32)
LOAD_WORKERS = (1, 8)


def _load_child(make, tag, barrier, seconds, measure, q):
    try:
        call = make(tag)
        call()                                   # connect and warm
        barrier.wait(120)
        v, n = [], 0
        end = now() + seconds
        while now() < end:
            t0 = now()
            call()
            if measure:
                v.append(now() - t0)
            n += 1
        q.put((n, v, None))
    except Exception as e:
        q.put((0, [], "%s: %s" % (type(e).__name__, e)))


def load(make, clients, workers, seconds, measure_one=False):
    """clients processes (forked), client i calling make("t%d" % (i % workers))()
    in a loop for `seconds` after they all stand ready; returns (calls per
    second over all, the samples of client 0 when measure_one).  make(tag)
    runs in the child and returns a function making one checked call."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(clients)
    q = ctx.Queue()
    procs = [ctx.Process(target=_load_child, args=(make, "t%d" % (i % workers), barrier, seconds,
                                                   measure_one and i == 0, q))
             for i in range(clients)]
    for p in procs:
        p.start()
    got = [q.get(timeout=seconds + 180) for _ in procs]
    for p in procs:
        p.join(30)
    errs = [e for _, _, e in got if e]
    if errs:
        raise RuntimeError("a load client failed: %s" % errs[0])
    total = sum(n for n, _, _ in got)
    samples = next((v for _, v, _ in got if v), [])
    return total / seconds, samples


def load_rows(prefix, make, seconds):
    """Throughput with 1, 2, 8 and 32 clients over 1 and over 8 workers,
    and the p99 of one client's hot call while 8 others hammer."""
    rows = []
    for w in LOAD_WORKERS:
        for c in LOAD_CLIENTS:
            rps, _ = load(make, c, w, seconds)
            rows.append(value_row("%s_rps_%dc_%dw" % (prefix, c, w), rps, "req/s",
                                  {"clients": c, "workers": w, "seconds": seconds}))
    _, v = load(make, 9, 8, seconds, measure_one=True)
    rows.append(row("%s_hot_under_load_8" % prefix, v,
                    extra={"load": "8 other clients calling without pause, over 8 workers"}))
    return rows


def bare_interpreter_memory(python, imports, env=None):
    """smaps_rollup of a bare `python` that has run `imports` and sits idle
    (the baseline a worker's extra memory is measured over)."""
    code = imports + "\nimport sys\nsys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()"
    p = subprocess.Popen([python, "-s", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=env, text=True)
    try:
        if p.stdout.readline().strip() != "ready":
            return None
        time.sleep(0.2)
        return smaps_rollup(p.pid)
    finally:
        p.stdin.close()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


if __name__ == "__main__":
    # python3 common.py unavailable BENCHMARK WHY NAME...: a result file of
    # unavailable rows, for a driver that could not run at all.
    if len(sys.argv) >= 5 and sys.argv[1] == "unavailable":
        write(sys.argv[2], [unavailable(nm, sys.argv[3]) for nm in sys.argv[4:]])
        sys.exit(0)
    sys.stderr.write("usage: common.py unavailable BENCHMARK WHY NAME...\n")
    sys.exit(100)
