"""omnipkgd measured from Python: the DaemonClient, the CLI, the FUSE front,
C-extension swapping, the cross-interpreter pipeline, memory, the small
JSON payload; and, beside them in the same run, what they are compared
with (a fresh subprocess per call, a bare interpreter's memory).

Stdlib only.  Starts its own omnipkgd on a private runtime dir with the
default home (so the bubbles made by scripts/bubbles.sh are found), like
the C benchmarks do.  Writes results/python_rows.json.

    OMNI_BUILD   the build dir holding omnipkgd and omnipkg (default: build)
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, os.path.join(common.REPO, "src", "python"))
from omnipkg.client import DaemonClient  # noqa: E402

BUILD = os.path.abspath(os.environ.get("OMNI_BUILD") or os.path.join(common.REPO, "build"))
SPEC_A, VER_A = "numpy==1.26.4", "1.26.4"
SPEC_B, VER_B = "numpy==2.2.6", "2.2.6"
HOPS = (("3.9", SPEC_A, VER_A), ("3.11", SPEC_A, VER_A), ("3.13", SPEC_B, VER_B))
VERSION_CODE = "import numpy\nresult = {'ver': numpy.__version__}"
PAYLOAD = {"name": "bench", "ints": list(range(20)), "nested": {"a": 1.5, "b": "text", "c": [1, 2, 3]},
           "words": ["alpha", "beta", "gamma", "delta"], "n": 12345, "flag": True, "none": None}


def expect(cond, what):
    if not cond:
        raise RuntimeError("wrong answer: " + what)


def pythons():
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = {}
    for xy in ("3.9", "3.11", "3.13"):
        best = None
        for d in glob.glob(os.path.join(root, "versions", xy + ".*")):
            m = re.fullmatch(re.escape(xy) + r"\.(\d+)", os.path.basename(d))
            exe = os.path.join(d, "bin", "python3")
            if m and os.access(exe, os.X_OK) and (best is None or int(m.group(1)) > best[0]):
                best = (int(m.group(1)), exe)
        if best:
            found[xy] = best[1]
        elif shutil.which("python" + xy):
            found[xy] = shutil.which("python" + xy)
    return found


def bubble(spec, xy):
    home = os.environ.get("OMNIPKG_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "omnipkg")
    name, ver = spec.split("==")
    d = os.path.join(home, "bubbles", "cp" + xy.replace(".", ""), "%s-%s" % (name, ver))
    return d if os.path.isdir(d) else None


class Daemon:
    """omnipkgd on a private runtime dir, in its own process group."""

    def __init__(self, mount=False, config=None):
        self.tmp = tempfile.mkdtemp(prefix="omnibench-py-")
        self.runtime = os.path.join(self.tmp, "run")
        os.mkdir(self.runtime, 0o700)
        self.mount = os.path.join(self.tmp, "mnt") if mount else None
        cfg = {"mount": ""}
        cfg.update(config or {})
        self.config = os.path.join(self.tmp, "config.json")
        with open(self.config, "w") as f:
            json.dump(cfg, f)
        self.env = dict(os.environ, OMNIPKG_RUNTIME_DIR=self.runtime, OMNIPKG_CONFIG=self.config)
        for k in ("OMNIPKG_SOCKET", "OMNIPKG_DAEMON_CHILD"):
            self.env.pop(k, None)
        self.socket = os.path.join(self.runtime, "omnipkgd.sock")
        self.log = os.path.join(self.tmp, "omnipkgd.log")
        self.proc = None

    def start(self, timeout=30.0):
        argv = [os.path.join(BUILD, "omnipkgd"), "--foreground"]
        if self.mount:
            os.mkdir(self.mount)
            argv += ["--mount", self.mount]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("omnipkgd exited (%s): %s" % (self.proc.returncode, self.log_head()))
            try:
                if not DaemonClient(self.socket, timeout=5, auto_start=False).status()["success"]:
                    raise ConnectionError("not answering yet")
                if self.mount and not os.path.ismount(self.mount):
                    raise RuntimeError("omnipkgd answers but %s is not mounted: %s"
                                       % (self.mount, self.log_tail()))
                return self
            except (ConnectionError, OSError):
                time.sleep(0.05)
        raise RuntimeError("omnipkgd did not answer within %.0fs: %s" % (timeout, self.log_tail()))

    def log_head(self):
        try:
            with open(self.log, "rb") as f:
                return f.read(400).decode("utf-8", "replace").strip().split("\n")[0]
        except OSError:
            return ""

    def log_tail(self):
        try:
            with open(self.log, "rb") as f:
                return f.read()[-400:].decode("utf-8", "replace").strip().replace("\n", " | ")
        except OSError:
            return ""

    def client(self):
        return DaemonClient(self.socket, timeout=120, auto_start=False, raise_errors=True)

    def stop(self):
        if self.proc:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(10)
            except (subprocess.TimeoutExpired, OSError):
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        if self.mount and os.path.ismount(self.mount):
            subprocess.run(["fusermount3", "-u", "-z", self.mount], stderr=subprocess.DEVNULL, timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


def ok(r):
    if not r.get("success"):
        raise RuntimeError("job failed: %s" % (r.get("error") or r)[:300] if isinstance(r.get("error"), str)
                           else "job failed: %r" % r)
    return r


# ------------------------------------------------------------------ rows

def hot_python(c, n):
    for _ in range(200):
        ok(c.execute("base", "pass", python_exe="3.11"))
    v = []
    for _ in range(n):
        t0 = common.now()
        r = c.execute("base", "pass", python_exe="3.11")
        v.append(common.now() - t0)
        ok(r)
    return [common.row("hot_exec_python_client", v)]


def hot_cli(d, n):
    argv = [os.path.join(BUILD, "omnipkg"), "--socket", d.socket, "exec", "--spec", "base",
            "--python", "3.11", "-c", "print(6*7)"]
    v = []
    for i in range(n + 5):
        t0 = common.now()
        r = subprocess.run(argv, env=d.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        dt = common.now() - t0
        expect(r.returncode == 0 and r.stdout.strip() == "42",
               "omnipkg exec: status %d, stdout %r, stderr %r" % (r.returncode, r.stdout[:80], r.stderr[:200]))
        if i >= 5:
            v.append(dt)
    return [common.row("hot_exec_cli", v, extra={"code": "print(6*7)"})]


def fuse_exec(n):
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return [common.unavailable("hot_exec_fuse", "not available: /dev/fuse is not usable")]
    d = Daemon(mount=True)
    try:
        try:
            d.start()
        except Exception as e:
            return [common.unavailable("hot_exec_fuse", "not available: mounting failed: %s" % str(e)[:300])]
        path = os.path.join(d.mount, "specs", "base", "3.11", "exec")

        def once():
            fd = os.open(path, os.O_RDWR)
            try:
                os.write(fd, b"result = 6*7\n")
                data = os.read(fd, 1 << 16)
            finally:
                os.close(fd)
            obj = json.loads(data.decode() or "null")
            expect(obj == 42 or (isinstance(obj, dict) and obj.get("result") == 42),
                   "FUSE exec read %r" % data[:200])

        try:
            for _ in range(20):
                once()
        except Exception as e:
            return [common.unavailable("hot_exec_fuse", "not available: FUSE exec failed: %s" % str(e)[:300])]
        v = []
        for _ in range(n):
            t0 = common.now()
            once()
            v.append(common.now() - t0)
        return [common.row("hot_exec_fuse", v, extra={"code": "result = 6*7"})]
    finally:
        d.stop()


def swap(c, n):
    for spec, ver in ((SPEC_A, VER_A), (SPEC_B, VER_B)):
        r = ok(c.execute(spec, VERSION_CODE, python_exe="3.11"))
        expect(r.get("ver") == ver, "%s gave numpy %r" % (spec, r.get("ver")))
    v = []
    for i in range(n):
        spec, ver = ((SPEC_A, VER_A), (SPEC_B, VER_B))[i % 2]
        t0 = common.now()
        r = c.execute(spec, VERSION_CODE, python_exe="3.11")
        v.append(common.now() - t0)
        expect(r.get("success") and r.get("ver") == ver, "%s gave %r" % (spec, r.get("ver")))
    return [common.row("cext_swap_hot", v)]


def swap_subprocess(py, n):
    """The naive alternative: a fresh interpreter per call."""
    dirs = [bubble(SPEC_A, "3.11"), bubble(SPEC_B, "3.11")]
    if not all(dirs):
        return [common.unavailable("cext_swap_fresh_subprocess", "numpy bubbles for 3.11 missing (scripts/bubbles.sh)")]
    v = []
    for i in range(n):
        ver = (VER_A, VER_B)[i % 2]
        env = dict(os.environ, PYTHONPATH=dirs[i % 2])
        t0 = common.now()
        r = subprocess.run([py, "-s", "-c", "import numpy; print(numpy.__version__)"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        v.append(common.now() - t0)
        expect(r.returncode == 0 and r.stdout.strip() == ver, "fresh python gave %r" % r.stdout.strip())
    return [common.row("cext_swap_fresh_subprocess", v)]


def hop_code(x, ver):
    return ("import numpy, sys\n"
            "assert numpy.__version__ == %r\n"
            "result = {'x': int(numpy.int64(%d) * 3 + 1), 'py': '%%d.%%d' %% sys.version_info[:2]}" % (ver, x))


def cross(c, n):
    for xy, spec, ver in HOPS:
        r = c.execute(spec, hop_code(1, ver), python_exe=xy)
        if not r.get("success"):
            return [common.unavailable("cross_interpreter_pipeline",
                                       "the Python %s hop failed: %s" % (xy, str(r.get("error"))[:300]))]
        expect(r.get("py") == xy, "hop ran on %r" % r.get("py"))
    v = []
    for i in range(n):
        x = i
        t0 = common.now()
        for xy, spec, ver in HOPS:
            r = ok(c.execute(spec, hop_code(x, ver), python_exe=xy))
            expect(r.get("py") == xy, "hop ran on %r" % r.get("py"))
            x = r["x"]
        v.append(common.now() - t0)
        expect(x == ((i * 3 + 1) * 3 + 1) * 3 + 1, "pipeline gave %r" % x)
    return [common.row("cross_interpreter_pipeline", v)]


def array_pipeline(c, n):
    """A 64 MB array through the three hops with execute_zero_copy, the
    call omnipkg 3.4.1's row makes with the same code."""
    where = bubble(SPEC_A, "3.11")
    if not where:
        return [common.unavailable("array_pipeline_64MB", "numpy bubble for 3.11 missing")]
    sys.path.insert(0, where)
    import numpy as np

    def hop(i, x):
        _, spec, _ = HOPS[i]
        return c.execute_zero_copy(spec, common.PIPE_CODE, x, x.shape, x.dtype,
                                   python_exe=HOPS[i][0])[0]
    return common.array_pipeline("array_pipeline_64MB", np, hop, n)


def small_json(c, n, hot_p50):
    code = "result = %r" % (PAYLOAD,)
    for _ in range(50):
        ok(c.execute("base", code, python_exe="3.11"))
    v = []
    for _ in range(n):
        t0 = common.now()
        r = c.execute("base", code, python_exe="3.11")
        v.append(common.now() - t0)
        expect(r.get("success") and r.get("job_result") == PAYLOAD,
               "dict came back as %r" % r.get("job_result"))
    return [common.row("json_dict_roundtrip", v, ref=("hot_exec_python_client", hot_p50))]


def memory(d, c, py):
    rows = []
    r = ok(c.execute(SPEC_A, "import os, numpy\nresult = {'pid': os.getpid()}", python_exe="3.11"))
    wpid = r["pid"]
    rb = ok(c.execute("base", "import os\nresult = {'pid': os.getpid()}", python_exe="3.11"))
    time.sleep(0.5)
    dm = common.smaps_rollup(d.proc.pid)
    rows.append(common.value_row("daemon_rss", dm["rss"], "B"))
    rows.append(common.value_row("daemon_uss", dm["uss"], "B"))
    w = common.smaps_rollup(wpid)
    wb = common.smaps_rollup(rb["pid"])
    env = dict(os.environ, PYTHONPATH=bubble(SPEC_A, "3.11") or "")
    bare = common.bare_interpreter_memory(py, "import numpy", env)
    bare0 = common.bare_interpreter_memory(py, "pass")
    rows.append(common.value_row("worker_numpy_rss", w["rss"], "B"))
    rows.append(common.value_row("worker_numpy_uss", w["uss"], "B"))
    rows.append(common.value_row("worker_numpy_pss", w["pss"], "B"))
    rows.append(common.value_row("bare_python_numpy_uss", bare["uss"], "B", {"python": py}))
    rows.append(common.value_row("worker_numpy_uss_over_bare", w["uss"] - bare["uss"], "B",
                                 {"reference": "bare_python_numpy_uss"}))
    rows.append(common.value_row("worker_numpy_pss_over_bare", w["pss"] - bare["pss"], "B",
                                 {"reference": "bare_python_numpy_pss"}))
    rows.append(common.value_row("worker_base_uss_over_bare", wb["uss"] - bare0["uss"], "B",
                                 {"reference": "bare_python_uss"}))
    return rows


def memory_scaling(c, d):
    """common.memory_rows for 1, 4 and 16 numpy workers (one tag each)."""
    rows = []
    for n in common.MEM_WORKERS:
        pids, mods = [], []
        for i in range(n):
            r = ok(c.execute(SPEC_A, common.MEM_CODE, python_exe="3.11", worker_tag="mem%d" % i))
            pids.append(r["pid"])
            mods.append([r["modules"], r["omnipkg_modules"]])
        time.sleep(0.5)
        st = ok(c.status())
        helpers = [z["pid"] for z in st.get("zygotes", []) if z.get("pid")]
        rows += common.memory_rows("ours", n, pids, helpers, d.proc.pid,
                                   "workers forked from a zygote; helpers = the zygotes", mods)
    for i in range(max(common.MEM_WORKERS)):
        c.evict_worker(SPEC_A, "3.11", "mem%d" % i)
    return rows


def throughput(d):
    def make(tag):
        c = DaemonClient(d.socket, timeout=120, auto_start=False, raise_errors=True)

        def call():
            r = c.execute_shm(SPEC_A, "pass", {}, {}, python_exe="3.11", worker_tag=tag)
            if r.get("status") != "COMPLETED":
                raise RuntimeError("pass failed: %s" % r.get("error"))
        return call
    return common.load_rows("ours", make, 1.0 if common.quick() else 3.0)


def main():
    rows = []
    pys = pythons()
    py = pys.get("3.11")
    versions = {"python": {k: v for k, v in pys.items()}}
    try:
        versions["omnipkgd"] = subprocess.run([os.path.join(BUILD, "omnipkgd"), "--version"],
                                              stdout=subprocess.PIPE, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass

    def section(names, fn, *args):
        try:
            rows.extend(fn(*args))
        except Exception as e:
            for nm in names:
                rows.append(common.unavailable(nm, "%s: %s" % (type(e).__name__, str(e)[:300])))

    d = Daemon()
    try:
        d.start()
        c = d.client()
        section(["hot_exec_python_client"], hot_python, c, common.iters(5000, 500))
        hot = next((r["p50"] for r in rows if r["name"] == "hot_exec_python_client" and "p50" in r), 0)
        section(["hot_exec_cli"], hot_cli, d, common.iters(200, 30))
        section(["cext_swap_hot"], swap, c, common.iters(2000, 200))
        section(["cext_swap_fresh_subprocess"], swap_subprocess, py, common.iters(30, 6))
        section(["cross_interpreter_pipeline"], cross, c, common.iters(1000, 100))
        section(["json_dict_roundtrip"], small_json, c, common.iters(3000, 300), hot)
        section(["daemon_rss", "worker_numpy_uss_over_bare"], memory, d, c, py)
        section(["ours_mem_%dw_total_pss" % n for n in common.MEM_WORKERS], memory_scaling, c, d)
        section(["ours_rps_1c_1w"], throughput, d)
        # After the memory rows: its workers keep 64 MB segments mapped.
        section(["array_pipeline_64MB"], array_pipeline, c, common.iters(20, 4))
        c.close()
    except Exception as e:
        rows.append(common.unavailable("omnipkgd", "could not start: %s" % e))
    finally:
        d.stop()
    section(["hot_exec_fuse"], fuse_exec, common.iters(2000, 200))
    common.write("python_rows", rows, versions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
