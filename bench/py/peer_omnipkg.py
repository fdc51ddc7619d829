"""omnipkg 3.4.1, measured side by side with omnipkgd.

Runs inside omnipkg's own virtual environment (.venv-bench/py311, made by
bench/setup_peers.sh), started by bench/run.sh with HOME, XDG_* and TMPDIR
pointing into a private directory: omnipkg keeps its socket, pid file,
logs and worker scripts under $TMPDIR/omnipkg, its config under $HOME, and
its start-up deletes temporary files it considers stale, so it must see
nothing of the user's.  Its daemon is started here in the foreground
(`worker_daemon start --no-fork`) as our child, so that every process it
spawns is found by walking the process tree from its pid and killed by
pid afterwards (its own `stop` kills by matching command lines, so it is
never used).  Every section runs under an alarm; a section that fails or
overruns becomes an "unavailable" row with the reason.

Writes results/peer_omnipkg.json.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import numpy as np  # noqa: E402  (omnipkg's client needs numpy for its SHM paths)
from omnipkg.isolation import worker_daemon as wd  # noqa: E402

SPEC_A, VER_A = "numpy==1.26.4", "1.26.4"
SPEC_B, VER_B = "numpy==2.2.6", "2.2.6"
VENVS = os.path.join(common.REPO, ".venv-bench")
START_TIMEOUT = 90.0
CALL_TIMEOUT = 120.0


class Overrun(Exception):
    pass


def _alarm(signum, frame):
    raise Overrun("section ran past its time limit")


class Section:
    """with Section(seconds): raises Overrun when it runs too long."""

    def __init__(self, seconds):
        self.seconds = int(max(1, seconds))

    def __enter__(self):
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        return False


class Peer:
    def __init__(self):
        self.proc = None
        self.log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "peer-daemon.log")
        self.client = wd.DaemonClient(auto_start=False, timeout=CALL_TIMEOUT)
        self.known = set()    # pids seen under the daemon, killed at the end

    def start(self):
        """Starts the daemon; returns seconds until its socket accepted."""
        log = open(self.log_path, "ab")
        env = dict(os.environ, OMNIPKG_DAEMON_CHILD="1", PYTHONUNBUFFERED="1")
        t0 = common.now()
        self.proc = subprocess.Popen([sys.executable, "-m", "omnipkg.isolation.worker_daemon",
                                      "start", "--no-fork"], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        log.close()
        pidfile = os.environ.get("OMNI_PEER_PIDFILE")
        if pidfile:
            with open(pidfile, "w") as f:
                f.write("%d\n" % self.proc.pid)
        deadline = t0 + START_TIMEOUT
        while common.now() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("its daemon exited with status %s: %s"
                                   % (self.proc.returncode, self.log_tail()))
            if os.path.exists(wd.DEFAULT_SOCKET):
                try:
                    import socket
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.settimeout(1)
                    s.connect(wd.DEFAULT_SOCKET)
                    s.close()
                    return common.now() - t0
                except OSError:
                    pass
            time.sleep(0.02)
        raise RuntimeError("its daemon did not accept on %s within %.0fs" % (wd.DEFAULT_SOCKET, START_TIMEOUT))

    def log_tail(self, n=600):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace").replace("\n", " | ")
        except OSError:
            return ""

    def remember(self):
        if self.proc:
            self.known.update(common.descendants(self.proc.pid))

    def stop(self):
        if not self.proc:
            return
        self.remember()
        try:
            with Section(10):
                self.client.shutdown()
        except Exception:
            pass
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(5)
        except (subprocess.TimeoutExpired, OSError):
            pass
        self.remember()
        for pid in [self.proc.pid] + sorted(self.known):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def call(self, spec, code, python_exe=None, **kw):
        r = self.client.execute_shm(spec, code, {}, {}, python_exe=python_exe, **kw)
        if not isinstance(r, dict) or not r.get("success"):
            raise RuntimeError("call failed: %s" % (str(r.get("error") if isinstance(r, dict) else r)[:300]))
        return r


def expect(cond, what):
    if not cond:
        raise RuntimeError("wrong answer: " + what)


VERSION_CODE = "import numpy\nresult = {'ver': numpy.__version__}"


def hot(peer, n):
    peer.call(SPEC_A, "pass")
    for _ in range(50):
        peer.call(SPEC_A, "pass")
    v = []
    for _ in range(n):
        t0 = common.now()
        r = peer.call(SPEC_A, "pass")
        v.append(common.now() - t0)
        expect(r.get("success") is True, "pass did not succeed")
    return [common.row("omnipkg_hot_execute_shm", v)]


def cold(peer, n):
    """A new worker of a warm daemon: a fresh worker_tag each time (its idle
    pool of pre-started interpreters is given time to refill in between)."""
    v = []
    for _ in range(n):
        time.sleep(2.0)
        tag = "bench-" + uuid.uuid4().hex[:8]
        t0 = common.now()
        r = peer.call(SPEC_A, VERSION_CODE, worker_tag=tag)
        v.append(common.now() - t0)
        expect(r.get("ver") == VER_A, "numpy %r, expected %s" % (r.get("ver"), VER_A))
        peer.remember()
        try:
            peer.client._send({"type": "evict_worker", "spec": SPEC_A,
                               "python_exe": wd._resolve_python_exe(None), "worker_tag": tag})
        except Exception:
            pass
    return [common.row("omnipkg_cold_new_worker", v)]


def swap(peer, n):
    for spec, ver in ((SPEC_A, VER_A), (SPEC_B, VER_B)):
        r = peer.call(spec, VERSION_CODE)
        expect(r.get("ver") == ver, "%s gave numpy %r" % (spec, r.get("ver")))
    v = []
    for i in range(n):
        spec, ver = ((SPEC_A, VER_A), (SPEC_B, VER_B))[i % 2]
        t0 = common.now()
        r = peer.call(spec, VERSION_CODE)
        v.append(common.now() - t0)
        expect(r.get("ver") == ver, "%s gave numpy %r" % (spec, r.get("ver")))
    return [common.row("omnipkg_cext_swap", v)]


HOPS = (("3.9", "py39", SPEC_A, VER_A), ("3.11", "py311", SPEC_A, VER_A), ("3.13", "py313", SPEC_B, VER_B))


def hop_code(x, ver):
    return ("import numpy, sys\n"
            "assert numpy.__version__ == %r\n"
            "result = {'x': int(numpy.int64(%d) * 3 + 1), 'py': '%%d.%%d' %% sys.version_info[:2]}" % (ver, x))


def cross(peer, n):
    exes = []
    for xy, venv, spec, ver in HOPS:
        exe = os.path.join(VENVS, venv, "bin", "python")
        failed = os.path.join(VENVS, venv + ".failed")
        if os.path.exists(failed):
            with open(failed) as f:
                raise RuntimeError("no omnipkg environment for Python %s: %s" % (xy, f.read().strip()))
        if not os.access(exe, os.X_OK):
            raise RuntimeError("no omnipkg environment for Python %s (%s)" % (xy, exe))
        exes.append(exe)
    for (xy, _, spec, ver), exe in zip(HOPS, exes):   # warm each hop
        try:
            with Section(CALL_TIMEOUT):
                r = peer.call(spec, hop_code(1, ver), python_exe=exe)
        except Exception as e:
            raise RuntimeError("the Python %s hop (%s) failed: %s" % (xy, exe, e))
        expect(r.get("py") == xy, "hop ran on Python %r, expected %s" % (r.get("py"), xy))
    v = []
    for i in range(n):
        x = i
        t0 = common.now()
        for (xy, _, spec, ver), exe in zip(HOPS, exes):
            r = peer.call(spec, hop_code(x, ver), python_exe=exe)
            expect(r.get("py") == xy, "hop ran on %r" % r.get("py"))
            x = r["x"]
        v.append(common.now() - t0)
        expect(x == ((i * 3 + 1) * 3 + 1) * 3 + 1, "pipeline gave %r" % x)
    return [common.row("omnipkg_cross_interpreter_pipeline", v)]


def array_pipeline(peer, n):
    """ours.py's array_pipeline, through omnipkg's own execute_zero_copy."""
    exes = [os.path.join(VENVS, venv, "bin", "python") for _, venv, _, _ in HOPS]

    def hop(i, x):
        return peer.client.execute_zero_copy(HOPS[i][2], common.PIPE_CODE, x, x.shape, x.dtype,
                                             python_exe=exes[i])[0]
    return common.array_pipeline("omnipkg_array_pipeline_64MB", np, hop, n)


def memory(peer):
    rows = []
    r = peer.call(SPEC_A, "import os, numpy\nresult = {'pid': os.getpid()}")
    wpid = r["pid"]
    time.sleep(0.5)
    d = common.smaps_rollup(peer.proc.pid)
    rows.append(common.value_row("omnipkg_daemon_rss", d["rss"], "B"))
    rows.append(common.value_row("omnipkg_daemon_uss", d["uss"], "B"))
    w = common.smaps_rollup(wpid)
    bare = common.bare_interpreter_memory(sys.executable, "import numpy")
    rows.append(common.value_row("omnipkg_worker_rss", w["rss"], "B"))
    rows.append(common.value_row("omnipkg_worker_uss", w["uss"], "B"))
    rows.append(common.value_row("omnipkg_worker_pss", w["pss"], "B"))
    if bare:
        rows.append(common.value_row("bare_python_numpy_uss", bare["uss"], "B",
                                     {"python": sys.executable}))
        rows.append(common.value_row("omnipkg_worker_uss_over_bare", w["uss"] - bare["uss"], "B",
                                     {"reference": "bare_python_numpy_uss"}))
        rows.append(common.value_row("omnipkg_worker_pss_over_bare", w["pss"] - bare["pss"], "B",
                                     {"reference": "bare_python_numpy_pss"}))
    tree = [p for p in common.descendants(peer.proc.pid)]
    total = sum((common.smaps_rollup(p) or {"uss": 0})["uss"] for p in tree)
    rows.append(common.value_row("omnipkg_all_processes_uss", total + d["uss"], "B",
                                 {"processes": len(tree) + 1}))
    peer.remember()
    return rows


SIZES = ((1 << 20, "1MB"), (64 << 20, "64MB"), (1 << 30, "1GB"))


def transfer(peer, size, label, n):
    count = size // 8
    a = np.arange(count, dtype=np.float64)
    code = "arr_out[:] = arr_in"
    out, _ = peer.client.execute_zero_copy(SPEC_A, code, a, a.shape, a.dtype)   # warm
    expect(np.array_equal(out, a), "output differs from input")
    v = []
    for _ in range(n):
        t0 = common.now()
        out, reply = peer.client.execute_zero_copy(SPEC_A, code, a, a.shape, a.dtype)
        v.append(common.now() - t0)
        expect(out.shape == a.shape and out[-1] == a[-1] and np.array_equal(out, a),
               "output differs from input")
        del out
    return common.row("omnipkg_zero_copy_%s" % label, v, extra={"bytes": size})


PAYLOAD = {"name": "bench", "ints": list(range(20)), "nested": {"a": 1.5, "b": "text", "c": [1, 2, 3]},
           "words": ["alpha", "beta", "gamma", "delta"], "n": 12345}


def small_json(peer, n):
    code = "import json\nprint(json.dumps(arr_in, sort_keys=True))"
    peer.client.execute_smart(SPEC_A, code, data=PAYLOAD)
    v = []
    for _ in range(n):
        t0 = common.now()
        r = peer.client.execute_smart(SPEC_A, code, data=PAYLOAD)
        v.append(common.now() - t0)
        expect(r.get("success") and r.get("transport") == "JSON", "not a JSON-path success: %r" % r)
        expect(json.loads(r["result"]) == PAYLOAD, "payload came back different")
    rows = [common.row("omnipkg_json_execute_smart", v)]
    # Its JSON path pastes json.dumps() text into Python source.
    r = peer.client.execute_smart(SPEC_A, code, data={"flag": True, "none": None})
    ok = bool(r.get("success")) and json.loads(r.get("result") or "null") == {"flag": True, "none": None}
    rows.append(common.value_row("omnipkg_json_true_none_roundtrip_ok", int(ok), "bool",
                                 {"error": "" if ok else str(r.get("error", ""))[:200]}))
    return rows


def memory_scaling(peer):
    """common.memory_rows for 1, 4 and 16 numpy workers (one worker_tag each)."""
    rows = []
    tags = []
    for n in common.MEM_WORKERS:
        pids, mods = [], []
        for i in range(n):
            tag = "mem%d" % i
            if tag not in tags:
                tags.append(tag)
            r = peer.call(SPEC_A, common.MEM_CODE, worker_tag=tag)
            pids.append(r["pid"])
            mods.append([r["modules"], r["omnipkg_modules"]])
        time.sleep(0.5)
        peer.remember()
        others = [p for p in common.descendants(peer.proc.pid) if p not in pids]
        rows += common.memory_rows("omnipkg", n, pids, others, peer.proc.pid,
                                   "fresh interpreters; helpers = every other process under its "
                                   "daemon (idle pool, watchers)", mods)
    for tag in tags:
        try:
            peer.client._send({"type": "evict_worker", "spec": SPEC_A,
                               "python_exe": wd._resolve_python_exe(None), "worker_tag": tag})
        except Exception:
            pass
    return rows


def throughput(peer):
    def make(tag):
        c = wd.DaemonClient(auto_start=False, timeout=CALL_TIMEOUT)

        def call():
            r = c.execute_shm(SPEC_A, "pass", {}, {}, worker_tag=tag)
            if not isinstance(r, dict) or r.get("status") != "COMPLETED":
                raise RuntimeError("pass failed: %s" % (r.get("error") if isinstance(r, dict) else r))
        return call
    rows = common.load_rows("omnipkg", make, 1.0 if common.quick() else 3.0)
    peer.remember()
    return rows


# --------------------------------------------------------- interleaved duel

DUEL_CODE = {"hot": "pass", "json": "import json\nprint(json.dumps(arr_in, sort_keys=True))"}


class Agent:
    """bench/py/agent_ours.py in a child process: our daemon and client,
    driven batch by batch."""

    def __init__(self):
        py = os.environ.get("OMNI_OURS_PY")
        if not py:
            raise RuntimeError("OMNI_OURS_PY (our Python) not set by bench/run.sh")
        env = dict(os.environ, OMNI_AGENT_PYTHON="3.11",
                   PYTHONPATH=os.path.join(common.REPO, "src", "python"))
        if os.environ.get("OMNI_OURS_HOME"):
            env["OMNIPKG_HOME"] = os.environ["OMNI_OURS_HOME"]
        for k in ("OMNIPKG_DAEMON_CHILD", "OMNIPKG_IS_DAEMON_WORKER"):
            env.pop(k, None)
        self.proc = subprocess.Popen([py, os.path.join(os.path.dirname(__file__), "agent_ours.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     text=True, start_new_session=True)

    def ask(self, case, n=0):
        self.proc.stdin.write(json.dumps({"case": case, "n": n}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("our agent exited (status %s)" % self.proc.poll())
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError("our side failed: %s" % out["error"])
        return out

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait(5)


def duel_call(peer, case):
    if case == "hot":
        r = peer.client.execute_shm(SPEC_A, DUEL_CODE["hot"], {}, {})
        expect(isinstance(r, dict) and r.get("status") == "COMPLETED", "pass failed: %r" % (r,))
    else:
        r = peer.client.execute_smart(SPEC_A, DUEL_CODE["json"], data=PAYLOAD)
        expect(r.get("success") and r.get("transport") == "JSON" and json.loads(r["result"]) == PAYLOAD,
               "execute_smart JSON round trip wrong: %r" % (r,))


def duel(peer, rounds, batch, warm):
    """omnipkg 3.4.1's client and ours, both Python, the same calls (
    execute_shm(spec, "pass", {}, {}) and execute_smart(spec, code,
    data=dict)) on the same spec and Python 3.11, the same warm-up,
    alternating batches: omnipkg, ours, omnipkg, ours..."""
    agent = Agent()
    try:
        agent.ask("warm", warm)
        for case in DUEL_CODE:
            for _ in range(warm):
                duel_call(peer, case)
        got = {(case, side): [] for case in DUEL_CODE for side in ("omnipkg", "ours")}
        for _ in range(rounds):
            for case in DUEL_CODE:
                v = got[(case, "omnipkg")]
                for _ in range(batch):
                    t0 = common.now()
                    duel_call(peer, case)
                    v.append(common.now() - t0)
                got[(case, "ours")].extend(agent.ask(case, batch)["v"])
    finally:
        agent.close()
    rows = []
    extra = {"interleaved": "%d rounds of %d calls per side" % (rounds, batch), "warm_up": warm,
             "client": "Python, both", "spec": SPEC_A, "python": "3.11"}
    for case, label in (("hot", "duel_hot_execute_shm"), ("json", "duel_json_execute_smart")):
        ours_v = got[(case, "ours")]
        o = common.row(label + "_ours", ours_v, extra=dict(extra, code=DUEL_CODE[case]))
        rows.append(o)
        rows.append(common.row(label + "_omnipkg", got[(case, "omnipkg")],
                               ref=(label + "_ours", o["p50"]), extra=dict(extra, code=DUEL_CODE[case])))
    return rows


def main():
    q = common.quick()
    rows = []
    versions = {"omnipkg": getattr(wd, "__version__", None) or _omnipkg_version(),
                "numpy(client)": np.__version__}
    # Its first call is fast or very slow depending on whether its home
    # already holds the package caches it builds on first use (a fresh
    # machine: tens of seconds); say which this run was.
    cond = {"home_initialised": os.path.isdir(os.path.join(os.path.expanduser("~"), ".config",
                                                             "omnipkg"))}
    peer = Peer()

    def section(names, seconds, fn, *args):
        """Runs fn under a time limit; its rows, or one unavailable row per name."""
        try:
            with Section(seconds):
                out = fn(*args)
            rows.extend(out)
        except Exception as e:
            why = "%s: %s" % (type(e).__name__, e)
            if isinstance(e, Overrun):
                why = "timed out after %ds (%s)" % (seconds, why)
            for nm in names:
                rows.append(common.unavailable(nm, why[:400]))
        peer.remember()

    try:
        try:
            with Section(START_TIMEOUT + 5):
                t_sock = peer.start()
        except Exception as e:
            for nm in ("omnipkg_daemon_start", "omnipkg_first_call", "omnipkg_hot_execute_shm",
                       "omnipkg_cold_new_worker", "omnipkg_cext_swap", "omnipkg_cross_interpreter_pipeline",
                       "omnipkg_daemon_rss", "omnipkg_worker_uss_over_bare", "omnipkg_zero_copy_1MB",
                       "omnipkg_zero_copy_64MB", "omnipkg_zero_copy_1GB", "omnipkg_json_execute_smart"):
                rows.append(common.unavailable(nm, "its daemon did not start: %s" % e))
            common.write("peer_omnipkg", rows, versions)
            return 0
        rows.append(common.value_row("omnipkg_daemon_start", t_sock, "s", cond))

        def first_call():
            t0 = common.now()
            r = peer.call(SPEC_A, VERSION_CODE)
            dt = common.now() - t0
            expect(r.get("ver") == VER_A, "numpy %r" % r.get("ver"))
            return [common.value_row("omnipkg_first_call", dt, "s", cond)]

        section(["omnipkg_first_call"], CALL_TIMEOUT, first_call)
        section(["omnipkg_hot_execute_shm"], 120, hot, peer, common.iters(2000, 300))
        section(["omnipkg_cold_new_worker"], 150, cold, peer, common.iters(8, 2))
        section(["omnipkg_cext_swap"], 150, swap, peer, common.iters(400, 60))
        section(["omnipkg_cross_interpreter_pipeline"], 240, cross, peer, common.iters(100, 10))
        section(["omnipkg_array_pipeline_64MB"], 300, array_pipeline, peer, common.iters(10, 3))
        section(["omnipkg_daemon_rss", "omnipkg_worker_uss_over_bare"], 60, memory, peer)
        section(["omnipkg_mem_%dw_total_pss" % n for n in common.MEM_WORKERS], 240,
                memory_scaling, peer)
        section(["omnipkg_rps_1c_1w"], 300, throughput, peer)
        for size, label in SIZES:
            nrun = {"1MB": common.iters(100, 10), "64MB": common.iters(15, 3), "1GB": common.iters(3, 1)}[label]
            section(["omnipkg_zero_copy_%s" % label], 240 if label == "1GB" else 120,
                    lambda s=size, lb=label, k=nrun: [transfer(peer, s, lb, k)])
        section(["omnipkg_json_execute_smart"], 120, small_json, peer, common.iters(500, 60))
        section(["duel_hot_execute_shm_ours", "duel_hot_execute_shm_omnipkg",
                 "duel_json_execute_smart_ours", "duel_json_execute_smart_omnipkg"], 300,
                duel, peer, common.iters(20, 4), common.iters(100, 25), 200)
    finally:
        peer.stop()
    common.write("peer_omnipkg", rows, versions)
    return 0


def _omnipkg_version():
    try:
        from importlib.metadata import version
        return version("omnipkg")
    except Exception:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
