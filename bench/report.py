#!/usr/bin/env python3
"""Generates BENCHMARKS.md and its plots from results/*.json (stdlib only).

    python3 bench/report.py [--results DIR] [--out BENCHMARKS.md]

Every result file must come from the same run (machine.run, set from
$OMNI_BENCH_RUN by bench/run.sh); files of different runs are refused with
the list of what came from where.  Plots are drawn by gnuplot from the
scripts bench/latency.gp and bench/transfer.gp into DIR/*.png; without
gnuplot the report says so and goes on.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

CLAIMS = {   # the seed document's numbers, quoted as claims
    "hot": ("~2 ms", 2e-3), "cold": ("~300 ms", 0.3), "mem": ("~330 MB", 330e6),
    "shm1": ("~14 ms", 14e-3), "json": ("~10 ms", 10e-3),
}
DOCKER_CLAIMS = {   # the seed's Docker column, quoted as claims
    "hot": "~50 ms (\"best case API\")", "cold": "~2000 ms+", "mem": "~600 MB+ (\"Duplicated Kernel Space\")",
}


def load(results):
    docs = {}
    for path in sorted(glob.glob(os.path.join(results, "*.json"))):
        if os.path.basename(path).startswith("cuda_"):
            continue        # GPU runs (tests/gpu/bench_cuda.py): cuda_section's
        with open(path) as f:
            docs[os.path.basename(path)[:-5]] = json.load(f)
    if not docs:
        sys.exit("report: no results in %s; run make bench" % results)
    runs = {}
    for name, d in docs.items():
        runs.setdefault(d.get("machine", {}).get("run", ""), []).append(name)
    if len(runs) > 1:
        detail = "; ".join("run %r: %s" % (r or "(none)", ", ".join(n)) for r, n in sorted(runs.items()))
        sys.exit("report: refusing to mix results of different runs (%s). Run the whole suite "
                 "again (make bench) so that every file comes from one run." % detail)
    rows = {}
    for name, d in docs.items():
        for r in d.get("rows", []):
            r = dict(r, _file=name)
            rows[r["name"]] = r
    return docs, rows


# ------------------------------------------------------------- formatting

def t(s):
    if s is None:
        return "—"
    if s < 1e-6:
        return "%.0f ns" % (s * 1e9)
    if s < 1e-3:
        return "%.1f µs" % (s * 1e6)
    if s < 1:
        return "%.2f ms" % (s * 1e3)
    return "%.2f s" % s


def b(x):
    return "%.1f MiB" % (x / 2**20) if abs(x) >= 2**20 else "%.0f KiB" % (x / 1024)


class R:
    """Looks rows up; missing and unavailable rows read as None with a reason."""

    def __init__(self, rows):
        self.rows = rows

    def get(self, name):
        r = self.rows.get(name)
        if r is None or r.get("status") == "unavailable":
            return None
        return r

    def why(self, name):
        r = self.rows.get(name)
        if r is None:
            return "not measured (no row %s)" % name
        return r.get("why", "")

    def p50(self, name):
        r = self.get(name)
        if r is None:
            return None
        return r.get("p50", r.get("value"))

    def cell(self, name, kind="t"):
        r = self.get(name)
        if r is None:
            why = self.why(name)
            if why.startswith("not available yet"):
                return "not available yet"
            if why.startswith("not available"):
                return "not available"
            return "unavailable¹"
        if "p50" in r:
            return "%s (p99 %s, n %d)" % (t(r["p50"]), t(r["p99"]), r["n"])
        return b(r["value"]) if r["unit"] == "B" else (t(r["value"]) if r["unit"] == "s" else str(r["value"]))


def cell_text(s, limit=160):
    """Text made safe for a table cell."""
    s = str(s).replace("|", "/").replace("\n", " ")
    return s if len(s) <= limit else s[:limit - 1] + "…"


def ratio(a, c):
    if a is None or c is None or c == 0:
        return "—"
    q = a / c
    return ("%.2f×" if q >= 0.1 else "%.2g×") % q


# ---------------------------------------------------------------- plots

def plot_latency(rows, results, series):
    """One .dat file per series (the cumulative distribution from the row's
    histogram); returns the
    PNG name or None."""
    names, titles = [], []
    for name, title in series:
        r = rows.get(name)
        if not r or "hist" not in r:
            continue
        h = r["hist"]
        e, c = h["edges"], h["counts"]
        tot = float(sum(c)) or 1.0
        path = os.path.join(results, "lat_%s.dat" % name)
        with open(path, "w") as f:
            f.write("# %s: latency (us, bin upper edge), share of calls at or below it\n" % name)
            f.write("%.6g 0\n" % (e[0] * 1e6))
            acc = 0
            for i, k in enumerate(c):
                acc += k
                f.write("%.6g %.6g\n" % (e[i + 1] * 1e6, acc / tot))
        names.append(os.path.basename(path))
        titles.append(title)
    if not names:
        return None
    return gnuplot("latency.gp", results, "latency.png", names, titles)


def plot_transfer(rows, results):
    series = []
    for prefix, title in (("omnipkg_zero_copy_", "omnipkg 3.4.1 execute_zero_copy"),
                          ("memcpy_", "memcpy of the same bytes (floor)"),
                          ("shm_transfer_", "omnipkgd SHM, arr_out[:] = arr_in"),
                          ("shm_transfer_view_", "omnipkgd SHM, one element touched")):
        pts = []
        for label, size in (("1MB", 1 << 20), ("64MB", 64 << 20), ("1GB", 1 << 30)):
            r = rows.get(prefix + label)
            if r and "p50" in r:
                pts.append((size, r["p50"]))
        if pts:
            path = os.path.join(results, "xfer_%s.dat" % prefix.rstrip("_"))
            with open(path, "w") as f:
                f.write("# %s: bytes, p50 seconds\n" % title)
                for size, v in pts:
                    f.write("%d %.6g\n" % (size, v))
            series.append((os.path.basename(path), title))
    if not series:
        return None
    return gnuplot("transfer.gp", results, "transfer.png", [s[0] for s in series], [s[1] for s in series])


def gnuplot(script, results, png, files, titles):
    if not shutil.which("gnuplot"):
        print("report: gnuplot not found; %s not drawn" % png, file=sys.stderr)
        return None
    cmd = ["gnuplot", "-e", "files='%s'; titles='%s'; out='%s'" % (" ".join(files), " ".join('"%s"' % x.replace("'", "").replace('"', "") for x in titles), png),
           os.path.join(HERE, script)]
    r = subprocess.run(cmd, cwd=results, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if r.returncode != 0:
        print("report: gnuplot %s failed: %s" % (script, r.stderr.strip()), file=sys.stderr)
        return None
    return png


# ---------------------------------------------------------------- Docker

def docker_section(w, x, docs):
    """The seed table's third column (bench/py/docker_rows.py): its claims
    beside Docker and ours measured in the same run, like for like."""
    w("## Docker (the seed's third column)")
    w("")
    w("The seed's table puts omnipkg's daemon beside \"a Docker container\": hot execution %s against "
      "%s, cold start %s against %s, memory %s against %s. Those are its claims, quoted; the rest of this "
      "section is measured in this run." % (DOCKER_CLAIMS["hot"], CLAIMS["hot"][0], DOCKER_CLAIMS["cold"],
                                            CLAIMS["cold"][0], DOCKER_CLAIMS["mem"], CLAIMS["mem"][0]))
    w("")
    doc = docs.get("docker_rows")
    if doc is None or not any(r.get("status") != "unavailable" for r in doc.get("rows", [])):
        why = x.why("dk_hot_docker_exec_api")
        w("**Docker column unavailable:** %s" % cell_text(why or "bench/py/docker_rows.py did not run", 400))
        w("")
        return
    vers = (doc.get("machine", {}).get("versions") or {})
    d = vers.get("docker_details") or {}
    w("Compared: Docker %s with %s, containerd %s, runc %s (dockerd %s; every container `--network none`), image %s "
      "— beside omnipkgd's workers on the host's `/usr/bin/python3.11` with the host's Debian python3-numpy. "
      "Inside the container: %s. On the host: %s. Our worker: %s.%s Both sides are driven from one Python "
      "process, their series interleaved in batches (the order rotating each round) so that drift hits both; "
      "every call's answer is checked (exit status, or the numpy version printed or returned)."
      % (vers.get("docker", "?"), d.get("docker_storage", "?"), d.get("containerd", "?"), d.get("runc", "?"),
         d.get("dockerd", "?"), d.get("docker_image", "?"), d.get("inside_container", "?"),
         d.get("outside_host", "?"), d.get("ours_worker", "?"),
         (" Debian package versions that differ: %s." % d["package_revisions_differ"])
         if d.get("package_revisions_differ") else ""))
    w("")
    diff = next((r.get("differs") for r in doc.get("rows", []) if r.get("differs")), None)
    if diff:
        w("**Not the same software inside and outside:** %s" % cell_text(diff, 400))
        w("")
    w("| row | seed: Docker | Docker, measured | seed: omnipkg | ours, measured | Docker / ours |")
    w("|---|---|---|---|---|---|")

    def line(label, dclaim, dk, oclaim, ours, with_ratio=True, note=None):
        dv, ov = x.p50(dk) if dk else None, x.p50(ours) if ours else None
        w("| %s | %s | %s | %s | %s | %s |" % (
            label, dclaim or "—", x.cell(dk) if dk else "—", oclaim or "—", x.cell(ours) if ours else "—",
            note if note else (ratio(dv, ov) if with_ratio else "—")))

    line("hot exec `pass` through the API: Engine API exec create + start, its stream read to the end "
         "(from Python, `http.client` on the Unix socket), vs `DaemonClient.execute(\"base\", \"pass\")`",
         DOCKER_CLAIMS["hot"], "dk_hot_docker_exec_api", CLAIMS["hot"][0], "dk_hot_ours_python_client")
    line("hot exec `pass`, CLI: `docker exec C python3 -c pass` vs `omnipkg exec --spec base -c pass` "
         "(whole processes)", None, "dk_hot_docker_exec_cli", None, "dk_hot_ours_cli")
    line("run code that uses numpy, hot, API: `docker exec` starts a fresh python3 that imports numpy every "
         "time; our warm worker imported it on an earlier call", None, "dk_numpy_docker_exec_api", None,
         "dk_numpy_ours_warm_worker", note="not the same work (a cache effect)")
    line("the same through the CLIs", None, "dk_numpy_docker_exec_cli", None, "dk_numpy_ours_cli",
         note="not the same work (a cache effect)")
    line("cold start, `pass`: `docker run --rm --network none` vs `run_once` (a fresh worker forked from the "
         "interpreter's warm zygote, gone afterwards)", DOCKER_CLAIMS["cold"], "dk_cold_docker_run_pass",
         CLAIMS["cold"][0], "dk_cold_ours_new_worker_pass")
    line("cold start, `import numpy`: the same two, importing numpy", DOCKER_CLAIMS["cold"],
         "dk_cold_docker_run_numpy", CLAIMS["cold"][0], "dk_cold_ours_new_worker_numpy")
    line("cold start of the whole system: omnipkgd started + its first answer (`pass`); dockerd was already "
         "running for every `docker run` above", None, None, None, "dk_cold_ours_daemon_start_first_call")
    line("memory of one idle instance (numpy imported): the container's python3 vs our worker, PSS",
         None, "dk_docker_mem_1w_worker_pss", None, "dk_ours_mem_1w_worker_pss")
    cu, sh = x.p50("dk_docker_mem_1w_cgroup_usage"), x.p50("dk_docker_mem_1w_shim_pss")
    w("| one container's own footprint: its memory cgroup's usage (anon %s, page cache charged to it "
      "%s) + its containerd-shim's PSS; our workers have no per-worker helper | — | %s | — | — | — |" % (
          x.cell("dk_docker_mem_1w_cgroup_anon"), x.cell("dk_docker_mem_1w_cgroup_file"),
          "%s + %s = %s" % (b(cu), b(sh), b(cu + sh)) if cu is not None and sh is not None
          else x.cell("dk_docker_mem_1w_cgroup_usage")))
    dd, cd = x.p50("dk_docker_mem_1w_daemon_pss"), x.p50("dk_docker_mem_containerd_pss")
    od, oz = x.p50("dk_ours_mem_1w_daemon_pss"), x.p50("dk_ours_mem_1w_helpers_pss")
    w("| the daemons, once: dockerd + containerd vs omnipkgd + its zygote, PSS | — | %s | — | %s | %s |" % (
        "%s + %s = %s" % (b(dd), b(cd), b(dd + cd)) if dd is not None and cd is not None else x.cell("dk_docker_mem_1w_daemon_pss"),
        "%s + %s = %s" % (b(od), b(oz), b(od + oz)) if od is not None and oz is not None else x.cell("dk_ours_mem_1w_daemon_pss"),
        ratio(dd + cd, od + oz) if None not in (dd, cd, od, oz) else "—"))
    for n in (1, 4, 16):
        if x.rows.get("dk_docker_mem_%dw_total_pss" % n) is None and n > 1:
            continue
        line("memory, all processes with %d idle instance%s (total PSS)" % (n, "s" if n > 1 else ""),
             DOCKER_CLAIMS["mem"] if n == 1 else None, "dk_docker_mem_%dw_total_pss" % n,
             CLAIMS["mem"][0] if n == 1 else None, "dk_ours_mem_%dw_total_pss" % n)
    w("")
    w("*Docker / ours* is Docker's p50 (or memory) divided by ours: above 1× Docker is slower (or larger); "
      "it is given only where both sides do the same work. References beside them on the host, no container: "
      "a fresh `python3 -c pass` %s, a fresh `python3 -c \"import numpy\"` %s, a bare interpreter that "
      "imported numpy %s PSS. The seed does not say what its memory figures count; they are set beside "
      "the one-instance totals. The Engine API row stops its clock when the exec's stream ends (the process "
      "has exited) and reads the exit code afterwards, Docker's best case; the CLI does both. PSS charges "
      "every shared page to the processes mapping it in equal shares; a container's cgroup is charged only "
      "the page cache its processes read first." % (
          x.cell("dk_hot_host_python_c"), x.cell("dk_numpy_host_python_c"), x.cell("dk_host_bare_python_numpy_pss")))
    w("")


# ---------------------------------------------------------------- Ray

def ray_section(w, x, docs):
    """Two numpy versions from one Ray cluster (bench/py/ray_rows.py):
    Ray's runtime_env per version beside omnipkg.ray, in the same run."""
    w("## On a Ray cluster: runtime_env beside omnipkg.ray")
    w("")
    doc = docs.get("ray")
    if doc is None or not any(r.get("status") != "unavailable" for r in doc.get("rows", [])):
        why = x.why("ray_steady_omnipkg_task")
        w("**Ray rows unavailable:** %s" % cell_text(why or "bench/py/ray_rows.py did not run", 400))
        w("")
        return
    vers = (doc.get("machine", {}).get("versions") or {}).get("ray", "Ray")
    w("One job, `import numpy` and a small sum (its answer and numpy's version checked on every "
      "call), with numpy 1.26.4 and 2.2.6 from one %s cluster on this machine (one node, 2 logical "
      "CPUs): through Ray's own isolation, a `runtime_env={\"pip\": [\"numpy==X\"]}` per version, and "
      "through `omnipkg.ray` (the node's omnipkgd and its bubbles). *First call*: one sample per "
      "version (for `runtime_env`, the virtualenv made and numpy installed by pip from its warm "
      "cache; for omnipkg, the node's daemon started by the first, a worker and `import numpy`). "
      "*Steady*: calls alternating the two versions, the series interleaved in rounds." % vers)
    w("")
    w("| path | first call, numpy 1.26.4 | first call, numpy 2.2.6 | steady, alternating | "
      "calls over 100 ms | steady / plain task |")
    w("|---|---|---|---|---|---|")
    floor = x.p50("ray_steady_plain_task")
    for label, first, steady in (
            ("Ray `runtime_env` pip, a task per version", "ray_first_runtime_env_pip_numpy_%s",
             "ray_steady_runtime_env_pip"),
            ("`omnipkg.ray.remote_exec` (a Ray task forwarding to the node's omnipkgd)",
             "ray_first_omnipkg_numpy_%s", "ray_steady_omnipkg_task"),
            ("`omnipkg.ray.Node` actor, its connection kept", None, "ray_steady_omnipkg_actor"),
            ("plain Ray task on the driver's numpy (one version: the floor)", None,
             "ray_steady_plain_task")):
        r = x.get(steady)
        slow = "%d of %d" % (r["over_100ms"], r["n"]) if r and "over_100ms" in r else "—"
        firsts = [(t(x.p50(first % v)) if x.get(first % v) else x.cell(first % v)) if first
                  else "—" for v in ("1_26_4", "2_2_6")]
        w("| %s | %s | %s | %s | %s | %s |" % (label, firsts[0], firsts[1], x.cell(steady), slow,
                                               ratio(x.p50(steady), floor)))
    w("")
    pip_why = x.why("ray_steady_runtime_env_pip") if x.get("ray_steady_runtime_env_pip") is None else ""
    if pip_why:
        w("`runtime_env` rows unavailable: %s" % cell_text(pip_why, 400))
        w("")


# ---------------------------------------------------------------- report

def shared_state(w, x):
    """The atomics and control blocks (bench/py/atomics.py), the two modes
    side by side."""
    w("## Shared state: atomics and control blocks")
    w("")
    w("From Python 3.11 processes (`bench/py/atomics.py`), on a 64-byte record of one control block "
      "(a daemon segment). *atomic*: the seqlock of `omnipkg.h` through `omnipkg_atomic` (readers "
      "retry, writers claim with one CAS). *file lock*: the same block in \"standard mode\" (writers "
      "`flock` exclusive, readers shared). Reads are timed one by one while the writers write all "
      "the while; every read's copy was checked whole.")
    w("")
    w("| measurement | atomic | file lock | atomic faster by | omnipkg 3.4.1² |")
    w("|---|---|---|---|---|")
    for k in (0, 1, 4):
        a, f, o = "ctl_read_atomic_%dw" % k, "ctl_read_filelock_%dw" % k, "omnipkg_shared_state_read_%dw" % k
        w("| read, %d writer%s | %s | %s | %s | %s |" % (
            k, "" if k == 1 else "s", x.cell(a), x.cell(f), ratio(x.p50(f), x.p50(a)), x.cell(o)))
    for k in (1, 2, 4):
        a, f, o = "ctl_writes_atomic_%dw" % k, "ctl_writes_filelock_%dw" % k, \
            "omnipkg_shared_state_writes_%dw" % k
        av, fv, ov = x.p50(a), x.p50(f), x.p50(o)
        w("| writes per second, %d writer%s (all together) | %s | %s | %s | %s |" % (
            k, "" if k == 1 else "s", "%.0f" % av if av else x.cell(a),
            "%.0f" % fv if fv else x.cell(f), ratio(av, fv), "%.0f" % ov if ov else x.cell(o)))
    w("")
    w("² omnipkg 3.4.1's `SharedStateMonitor` (`bench/py/peer_atomics.py`): its wheel has no compiled "
      "atomics, so every install takes this path. Its read is `read_state()`, an unsynchronised "
      "unpack of the 24-byte header (no record, nothing that tells a torn read); its write is "
      "`try_lock_and_validate()` + `commit_and_release()` under a `filelock.FileLock`.")
    w("")
    w("| `omnipkg_atomic` from Python (mean per call, batches of 1000) | p50 (p99) |")
    w("|---|---|")
    for name, label in (("atomic_cas64_python", "`cas64(addr, expected, desired)`"),
                        ("atomic_load64_python", "`load64(addr)`"),
                        ("atomic_cas64_buf_python", "`cas64_buf(mmap, offset, expected, desired)`"),
                        ("python_call_overhead", "a Python call of an empty lambda, for reference")):
        w("| %s | %s |" % (label, x.cell(name)))
    w("")
    a0, a1, a4 = (x.get("ctl_read_atomic_%dw" % k) for k in (0, 1, 4))
    if a0 and a1 and a4:
        w("Reads under 1 and 4 writers against none, p50: %s and %s. The writers keep a write in "
          "progress %.0f%% and %.0f%% of the time (a Python write holds the record for a "
          "microsecond or two), so that share of reads waits for the write to end and copies "
          "again; on a machine with fewer cores than processes the p99 is mostly the reader "
          "being scheduled out." % (ratio(a1["p50"], a0["p50"]), ratio(a4["p50"], a0["p50"]),
                                    100 * a1.get("held_share", 0), 100 * a4.get("held_share", 0)))
        w("")


def cuda_section(w, results):
    """The CUDA IPC rows: measured only on a GPU machine (tests/gpu/run.sh),
    in their own files, never part of a `make bench` run."""
    w("## CUDA IPC (GPU only)")
    w("")
    docs = []
    for path in sorted(glob.glob(os.path.join(results, "cuda_*.json"))):
        with open(path) as f:
            docs.append(json.load(f))
    if not docs:
        w("No GPU was available for this run, and no GPU run has been recorded: "
          "these rows have never been measured (`tests/gpu/run.sh` on a GPU machine "
          "writes `results/cuda_<host>.json`).")
        w("")
        return
    d = max(docs, key=lambda d: d.get("when", ""))
    w("Not from this run: last measured %s on %s (%s), %s calls a row. Target: cached "
      "<= hot exec + 10 us." % (d.get("when", "?"), d.get("host", "?"), d.get("gpu", "?"),
                                d.get("repeat", "?")))
    w("")
    w("| size | first call (us) | cached (us) | hot exec (us) | target |")
    w("|---|---|---|---|---|")
    for r in d.get("rows", []):
        w("| %s | %s | %s | %s | %s |" % (r.get("size"), r.get("first_us"), r.get("cached_us"),
                                          r.get("hot_exec_us"),
                                          "met" if r.get("target_met") else "missed"))
    w("")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=os.path.join(REPO, "results"))
    ap.add_argument("--out", default=os.path.join(REPO, "BENCHMARKS.md"))
    a = ap.parse_args()
    results = os.path.abspath(a.results)
    docs, rows = load(results)
    x = R(rows)
    any_doc = next(iter(docs.values()))
    m = dict(any_doc.get("machine", {}))
    quick = any(d.get("quick") for d in docs.values())
    rtt = x.p50("unix_socket_rtt")        # cross-core pinned (bench/bench_hot.c)
    hot_py = x.p50("hot_exec_python_client")
    out = []
    w = out.append

    w("# Benchmarks")
    w("")
    w("Generated by `bench/report.py` from `results/*.json` of one run of `make bench%s`; "
      "do not edit by hand." % (" QUICK=1" if quick else ""))
    w("")
    w("| machine | |")
    w("|---|---|")
    w("| CPU | %s (%s cores) |" % (m.get("cpu", "?"), m.get("cores", "?")))
    w("| kernel | %s |" % m.get("kernel", "?"))
    w("| date | %s |" % m.get("date", "?"))
    w("| commit | %s%s |" % (m.get("commit", "?"), " (uncommitted changes)" if any(
        d.get("machine", {}).get("dirty") for d in docs.values()) else ""))
    w("| run id | %s%s |" % (m.get("run", "?"), " — QUICK (smoke run: few samples)" if quick else ""))
    vers = []
    if "omnipkgd" in m:
        vers.append("omnipkgd %s" % m["omnipkgd"])
    for d in docs.values():
        for k, v in (d.get("machine", {}).get("versions") or {}).items():
            if isinstance(v, str) and v:
                vers.append(v if v.startswith(k + " ") else "%s %s" % (k, v))
    w("| versions | %s |" % ", ".join(sorted(set(vers))))
    w("")

    un = [r for r in rows.values() if r.get("status") == "unavailable"]

    # --- summary
    w("## Summary")
    w("")
    w("Times are p50 (p99 and the number of measured calls in brackets). *Claim* is the seed "
      "document's number, quoted, not measured. *Floor* is the reference measured beside it in "
      "the same run. Every measured call's answer was checked; a row that could not run says so.")
    w("")
    w("| row | claim | omnipkg 3.4.1 | ours | floor / reference | ratio ours/floor | speed-up over omnipkg |")
    w("|---|---|---|---|---|---|---|")

    def line(label, claim, peer, ours, floor, floor_label=None, floor_val=None, mem=False):
        pv, ov = x.p50(peer) if peer else None, x.p50(ours) if ours else None
        fv = floor_val if floor_val is not None else (x.p50(floor) if floor else None)
        fcell = floor_label if floor_label else (x.cell(floor) if floor else "—")
        if floor and not floor_label:
            fcell = "%s: %s" % (floor.replace("_", " "), fcell)
        w("| %s | %s | %s | %s | %s | %s | %s |" % (
            label, claim or "—", x.cell(peer) if peer else "—", x.cell(ours) if ours else "—", fcell,
            ratio(ov, fv), ratio(pv, ov) if pv is not None and ov is not None else "—"))

    line("hot exec `pass`, Python clients, `execute_shm(spec, \"pass\", {}, {})`, interleaved "
         "(like for like)", CLAIMS["hot"][0], "duel_hot_execute_shm_omnipkg",
         "duel_hot_execute_shm_ours", "unix_socket_rtt")
    line("hot exec `pass`, socket, C client", CLAIMS["hot"][0], None, "hot_exec_socket_c",
         "unix_socket_rtt")
    line("hot exec `pass`, C client, client + daemon + worker pinned to one CPU (what placement "
         "is worth)", None, None, "hot_exec_socket_c_one_cpu", "unix_socket_rtt_same_core")
    line("hot exec `pass`, Python DaemonClient `execute(\"base\", \"pass\")`", None, None,
         "hot_exec_python_client", "unix_socket_rtt")
    line("hot exec, CLI `omnipkg exec` (whole process)", None, None, "hot_exec_cli", "python_c_pass")
    line("hot exec, FUSE (open, write, read, close)", None, None, "hot_exec_fuse", "unix_socket_rtt")
    line("stdlib multiprocessing forkserver `Pool.apply`", None, None, "forkserver_pool_apply", "unix_socket_rtt")
    line("Python-to-Python socket echo, exec-sized JSON frames (the Python client's floor)", None, None,
         "python_socket_echo", "unix_socket_rtt")
    line("cold start, fresh interpreter + `import numpy`", CLAIMS["cold"][0], "omnipkg_cold_new_worker",
         "cold_exec_numpy_job", "python_c_import_numpy")
    line("cold start, zygote fork + `import numpy`", CLAIMS["cold"][0], "omnipkg_cold_new_worker",
         "zygote_numpy_job", "python_c_import_numpy")
    line("worker start from a warm zygote", None, None, "zygote_worker_start", "python_c_pass")
    line("first call after daemon start", None, "omnipkg_first_call", None, None)
    line("C-extension swap, numpy 1.26.4 ⇄ 2.2.6, hot", None, "omnipkg_cext_swap", "cext_swap_hot",
         "cext_swap_fresh_subprocess")
    line("cross-interpreter 3.9 → 3.11 → 3.13, each hop hot", None, "omnipkg_cross_interpreter_pipeline",
         "cross_interpreter_pipeline", None, floor_label="3 × Unix RTT: %s" % t(3 * rtt if rtt else None),
         floor_val=3 * rtt if rtt else None)
    line("64 MB array through 3.9 → 3.11 → 3.13, `execute_zero_copy` each hop", None,
         "omnipkg_array_pipeline_64MB", "array_pipeline_64MB", "memcpy_64MB")
    line("daemon RSS", None, "omnipkg_daemon_rss", "daemon_rss", None)
    line("per worker (numpy) USS over a bare interpreter", CLAIMS["mem"][0], "omnipkg_worker_uss_over_bare",
         "worker_numpy_uss_over_bare", "bare_python_numpy_uss")
    line("per worker (numpy) PSS over a bare interpreter", None, "omnipkg_worker_pss_over_bare",
         "worker_numpy_pss_over_bare", None)
    for label, claim in (("1MB", CLAIMS["shm1"][0]), ("64MB", None), ("1GB", None)):
        pretty = label.replace("MB", " MB").replace("GB", " GB")
        line("data transfer %s in and out (`arr_out[:] = arr_in`)" % pretty, claim,
             "omnipkg_zero_copy_%s" % label, "shm_transfer_%s" % label, "memcpy_%s" % label)
        line("data transfer %s in and out, data already in a segment (one element touched)" % pretty,
             None, None, "shm_transfer_view_%s" % label, "hot_exec_numpy")
        line("data transfer %s, ordinary buffer copied in first" % pretty, None, None,
             "shm_copyin_%s" % label, "memcpy_%s" % label)
    line("small JSON payload, `execute_smart(spec, code, data=dict)` both, interleaved (like for like)",
         CLAIMS["json"][0], "duel_json_execute_smart_omnipkg", "duel_json_execute_smart_ours",
         "unix_socket_rtt")
    line("small JSON payload, dict `result` round trip (ours)", None, None, "json_dict_roundtrip",
         "unix_socket_rtt")
    line("whole command: `omnipkg exec -c pass`", None, None, "cmd_pass_omnipkg_exec", "cmd_pass_python_c")
    line("whole command: `import numpy` — a warm worker has numpy imported already: a cache "
         "effect, not a ratio to a floor", None, None, "cmd_import_numpy_omnipkg_exec",
         "cmd_import_numpy_python_c")
    w("")
    fc = x.get("omnipkg_first_call")
    if fc is not None and "home_initialised" in fc:
        w("omnipkg 3.4.1's first call and start-up depend on its home: on first use it builds package "
          "caches there (tens of seconds on a fresh machine). In this run its home was %s."
          % ("already initialised (the fast case)" if fc["home_initialised"] else "new (the slow case)"))
        w("")
    tn = x.get("omnipkg_json_true_none_roundtrip_ok")
    if tn is not None:
        w("omnipkg 3.4.1's `execute_smart` JSON path with `True`/`None` in the data: %s. "
          "(Ours sends the same dict with `True` and `None` and gets it back intact.)" %
          ("round trip intact" if tn["value"] else "**fails** (%s)" % cell_text(tn.get("error") or "no error text", 120)))
        w("")
    w("*Speed-up over omnipkg* is omnipkg's p50 (or memory) divided by ours: above 1× ours is faster "
      "(or smaller); it is given only where both sides make the same call from the same client "
      "language. ¹ see *Rows that could not run* below.")
    w("")
    w("The floor `unix_socket_rtt` is a Unix-socket ping-pong of a request-sized message (%d bytes) "
      "whose echo side waits in a blocking epoll as the daemon does, with the two ends pinned to "
      "different CPUs, in ten batches alternated with the C client's hot loop so that the host's drift "
      "hits both: on a VM that is the price of the wake-ups a hot call pays, and unlike the "
      "unpinned figure it does not depend on where the scheduler put the two ends. Every ratio to "
      "RTT in this file uses it. Beside it in the same run: unpinned %s, same core %s."
      % (96, x.cell("unix_socket_rtt_unpinned"), x.cell("unix_socket_rtt_same_core")))
    w("")

    docker_section(w, x, docs)
    ray_section(w, x, docs)

    # --- memory, like for like
    w("## Memory of a pool of idle numpy workers (PSS)")
    w("")
    w("The same job (`import numpy`, numpy 1.26.4, Python 3.11) on 1, 4 and 16 workers (one worker "
      "tag each) on both systems. PSS charges every shared page to the processes that map it in "
      "equal shares, so our workers forked from a zygote carry their part of the zygote's pages, "
      "and the total counts every process once.")
    w("")
    w("| workers | | per worker (median) | helpers (zygotes / other processes) | daemon | all processes |")
    w("|---|---|---|---|---|---|")
    for n in (1, 4, 16):
        for who, pre in (("omnipkg 3.4.1", "omnipkg"), ("ours", "ours")):
            cells = [x.cell("%s_mem_%dw_%s_pss" % (pre, n, k)) for k in ("worker", "helpers", "daemon", "total")]
            r = x.get("%s_mem_%dw_total_pss" % (pre, n))
            alive = "" if not r or r.get("alive_workers", n) == n else \
                " (%d alive: its own worker limit evicted the rest)" % r["alive_workers"]
            w("| %d | %s%s | %s |" % (n, who, alive, " | ".join(cells)))
    w("")

    # --- throughput
    w("## Throughput and tail latency under load")
    w("")
    w("Python clients in separate processes, each calling `execute_shm(\"numpy==1.26.4\", \"pass\", "
      "{}, {})` without pause; client *i* uses worker tag *i* mod the number of workers. Calls per "
      "second over all clients (each system measured on its own, one after the other, in the same run).")
    w("")
    w("| clients | workers | omnipkg 3.4.1 | ours | ours / omnipkg |")
    w("|---|---|---|---|---|")
    for wk in (1, 8):
        for c in (1, 2, 8, 32):
            pr, orr = x.get("omnipkg_rps_%dc_%dw" % (c, wk)), x.get("ours_rps_%dc_%dw" % (c, wk))
            pv = pr["value"] if pr and "value" in pr else None
            ov = orr["value"] if orr and "value" in orr else None
            w("| %d | %d | %s | %s | %s |" % (c, wk, "%.0f/s" % pv if pv else x.cell("omnipkg_rps_%dc_%dw" % (c, wk)),
                                              "%.0f/s" % ov if ov else x.cell("ours_rps_%dc_%dw" % (c, wk)),
                                              ratio(ov, pv) if ov and pv else "—"))
    w("")
    w("A hot call's latency while 8 other clients hammer 8 workers: omnipkg 3.4.1 %s; ours %s."
      % (x.cell("omnipkg_hot_under_load_8"), x.cell("ours_hot_under_load_8")))
    w("")

    # --- targets
    w("## DESIGN.md targets")
    w("")
    w("Computed from the ratios of this run (machine-independent by construction).")
    w("")
    w("| metric | target | measured | verdict |")
    w("|---|---|---|---|")

    def target(metric, goal, measured, ok):
        measured = cell_text(measured)
        verdict = "not measured" if ok is None else ("**met**" if ok else "**not met**")
        w("| %s | %s | %s | %s |" % (metric, goal, measured, verdict))

    hs = x.p50("hot_exec_socket_c")
    target("hot exec round trip, `pass`, socket", "p50 ≤ 3 × Unix RTT",
           "%s = %s RTT (%s)" % (t(hs), ratio(hs, rtt), t(rtt)) if hs and rtt else x.why("hot_exec_socket_c"),
           hs / rtt <= 3 if hs and rtt else None)
    fu = x.p50("hot_exec_fuse")
    target("FUSE exec", "p50 ≤ 10 × RTT",
           "%s = %s RTT" % (t(fu), ratio(fu, rtt)) if fu and rtt else x.why("hot_exec_fuse"),
           fu / rtt <= 10 if fu and rtt else None)
    ce, imp = x.p50("cold_exec_numpy_job"), x.p50("python_c_import_numpy")
    target("cold start, first worker of a spec", "≤ `python -c \"import numpy\"` + 10 ms",
           "%s vs %s + 10 ms" % (t(ce), t(imp)) if ce and imp else "not measured",
           ce <= imp + 0.010 if ce and imp else None)
    zs = x.p50("zygote_worker_start")
    target("next worker of a warm spec (zygote fork)", "≤ 10 ms", t(zs) if zs else "not measured",
           zs <= 0.010 if zs else None)
    he = x.p50("hot_exec_numpy")
    for label in ("1MB", "64MB", "1GB"):
        v = x.p50("shm_transfer_view_%s" % label)
        target("array in and out, data already in a segment, %s" % label, "≤ hot exec + 50 µs",
               "%s vs hot exec %s" % (t(v), t(he)) if v and he else x.why("shm_transfer_view_%s" % label),
               v <= he + 50e-6 if v and he else None)
    for label in ("1MB", "64MB", "1GB"):
        v, mc = x.p50("shm_copyin_%s" % label), x.p50("memcpy_%s" % label)
        target("array copied in, %s" % label, "≤ hot exec + 1.2 × memcpy",
               "%s vs %s + 1.2 × %s" % (t(v), t(he), t(mc)) if v and he and mc else
               x.why("shm_copyin_%s" % label),
               v <= he + 1.2 * mc if v and he and mc else None)
    for label in ("64MB",):
        v, om = x.p50("shm_transfer_%s" % label), x.p50("omnipkg_zero_copy_%s" % label)
        target("speed-up over omnipkg 3.4.1 at %s, like for like" % label, "≥ 100×",
               "%s vs %s = %s" % (t(v), t(om), ratio(om, v)) if v and om else "not measured",
               om / v >= 100 if v and om else None)
    pe = x.p50("python_socket_echo")
    target("hot exec round trip, `pass`, Python client", "p50 ≤ 2.5 × a Python-to-Python socket echo",
           "%s = %s the echo (%s)" % (t(hot_py), ratio(hot_py, pe), t(pe)) if hot_py and pe
           else x.why("python_socket_echo"),
           hot_py / pe <= 2.5 if hot_py and pe else None)
    js = x.p50("json_dict_roundtrip")
    target("small JSON payload", "≤ 1.5 × hot exec (Python client)",
           "%s = %s the Python client's hot exec (%s)" % (t(js), ratio(js, hot_py), t(hot_py)) if js and hot_py else "not measured",
           js / hot_py <= 1.5 if js and hot_py else None)
    dr = x.p50("daemon_rss")
    target("daemon RSS", "≤ 8 MB", b(dr) if dr else "not measured", dr <= 8e6 if dr else None)
    wu = x.p50("worker_numpy_pss_over_bare")
    target("per idle worker", "≤ 3 MB PSS over a bare interpreter with the same imports",
           b(wu) if wu is not None else "not measured", wu <= 3e6 if wu is not None else None)
    cas, rd0 = x.p50("atomic_cas64_python"), x.p50("ctl_read_atomic_0w")
    target("atomic read or CAS from Python, uncontended", "≤ 1 µs",
           "cas64 %s, control block read %s" % (t(cas), t(rd0)) if cas and rd0 else
           x.why("atomic_cas64_python"), max(cas, rd0) <= 1e-6 if cas and rd0 else None)
    w("")

    shared_state(w, x)
    cuda_section(w, results)

    # --- plots
    w("## Plots")
    w("")
    lat = plot_latency(rows, results, [
        ("unix_socket_rtt", "Unix socket ping-pong (floor)"),
        ("hot_exec_socket_c", "omnipkgd C client, pass"),
        ("hot_exec_python_client", "omnipkgd Python client, pass"),
        ("json_dict_roundtrip", "omnipkgd dict round trip"),
        ("cext_swap_hot", "omnipkgd numpy swap"),
        ("forkserver_pool_apply", "stdlib forkserver apply"),
        ("omnipkg_hot_execute_shm", "omnipkg 3.4.1 execute_shm pass"),
        ("omnipkg_json_execute_smart", "omnipkg 3.4.1 execute_smart JSON"),
        ("omnipkg_cext_swap", "omnipkg 3.4.1 numpy swap"),
    ])
    if lat:
        w("Latency distributions of the hot paths (cumulative share of calls; further left is faster, "
          "a long tail shows as a slow climb to 1):")
        w("")
        w("![latency distributions](results/%s)" % lat)
        w("")
    xf = plot_transfer(rows, results)
    if xf:
        w("Transfer time against size (p50; omnipkgd's rows flat where the worker touches one element):")
        w("")
        w("![transfer time vs size](results/%s)" % xf)
        w("")
    if not lat and not xf:
        w("No plots: gnuplot was not available or had nothing to draw.")
        w("")

    # --- all rows
    w("## All rows")
    w("")
    w("| file | row | p50 / value | p99 | n | compared with |")
    w("|---|---|---|---|---|---|")
    for name in sorted(rows, key=lambda n: (rows[n]["_file"], n)):
        r = rows[name]
        if r.get("status") == "unavailable":
            w("| %s | %s | unavailable | | | |" % (r["_file"], name))
            continue
        if "p50" in r:
            cmp_ = "%s %s" % (ratio(r["p50"], r.get("reference_p50")), r["reference"]) if r.get("reference_p50") else ""
            w("| %s | %s | %s | %s | %d | %s |" % (r["_file"], name, t(r["p50"]), t(r["p99"]), r["n"], cmp_))
        else:
            v = b(r["value"]) if r["unit"] == "B" else (t(r["value"]) if r["unit"] == "s" else str(r["value"]))
            w("| %s | %s | %s | | | %s |" % (r["_file"], name, v, r.get("reference", "")))
    w("")

    # --- unavailable
    w("## Rows that could not run")
    w("")
    un = [r for r in rows.values() if r.get("status") == "unavailable"]
    if un:
        for r in sorted(un, key=lambda r: r["name"]):
            w("- `%s` (%s): %s" % (r["name"], r["_file"], r.get("why", "").replace("\n", " ")))
    else:
        w("None.")
    w("")

    # --- reproduce
    w("## How to reproduce")
    w("")
    w("```sh")
    w("make bench            # setup, bubbles, peers (bench/setup_peers.sh), the suite, this file")
    w("make bench QUICK=1    # short smoke run")
    w("python3 bench/report.py   # regenerate this file from results/*.json")
    w("```")
    w("")
    w("- C rows: `build/bench/omnibench` (bench/bench_*.c, one per benchmark); each starts its own "
      "omnipkgd on a private runtime dir.")
    w("- Shared state: `bench/py/atomics.py` (omnipkg_atomic round trips, control block reads and "
      "writes in atomic and file-lock mode).")
    w("- Python rows: `bench/py/ours.py` (stdlib DaemonClient, CLI, FUSE, swap, pipeline, memory, JSON), "
      "`bench/py/floors.py` (multiprocessing forkserver), `bench/py/peer_omnipkg.py` (omnipkg 3.4.1).")
    w("- Whole commands: hyperfine (`--export-json`), converted by `bench/py/hyperfine_rows.py`.")
    w("- Ray: `tests/ray/setup.sh` makes `.venv-ray/` (ray, numpy 1.26.4, virtualenv from the package "
      "registry); `bench/py/ray_rows.py` starts a one-node Ray on a private temp dir and stops it and "
      "the node's omnipkgd at the end (`OMNI_BENCH_SKIP_RAY=1` skips the stage).")
    w("- Docker: `bench/docker_setup.sh` installs docker.io and debootstrap from apt if missing, starts "
      "dockerd (overlay2, no bridge, no iptables rules) unless one answers, and builds the image "
      "`omnibench-py:bookworm` once with `debootstrap --variant=minbase --include=python3,python3-numpy "
      "bookworm` from the mirror apt uses and `docker import` (no registry); `bench/py/docker_rows.py` "
      "drives the CLI and the Engine API; the dockerd the setup started is stopped by pid at the end.")
    w("- omnipkg 3.4.1 is installed with pip into `.venv-bench/` (pinned `omnipkg==3.4.1`, plus numpy "
      "for its client and workers; a numpy 2.2.6 bubble is made with `pip install --target` in its "
      "`.omnipkg_versions` directory, and venvs for Python 3.9 and 3.13 serve its cross-interpreter hops). "
      "Its daemon runs in the foreground as a child of the driver with HOME, XDG_* and TMPDIR in a "
      "private directory, and is stopped by pid (never by its own `stop`, which kills by command line).")
    w("- Memory is read from `/proc/PID/smaps_rollup` (USS = Private_Clean + Private_Dirty); the baseline "
      "is a bare interpreter of the same version that has run the same imports.")
    w("")
    with open(a.out, "w") as f:
        f.write("\n".join(out))
    print("report: wrote %s" % os.path.relpath(a.out, os.getcwd()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
