"""The seed table's third column: a Docker container beside omnipkgd, in the
same run, with the same Python and numpy on both sides.

    python3 bench/py/docker_rows.py STATE_DIR     (after bench/docker_setup.sh)

Stdlib only.  Docker is driven two ways: its CLI (`docker exec`, `docker
run`) and its Engine API over /var/run/docker.sock with http.client on a
Unix socket (no docker SDK).  Our side is omnipkgd (started here on a
private runtime dir, as bench/py/ours.py does) with its workers on the
host's /usr/bin/python3.11 and the host's Debian python3-numpy: the image
omnibench-py:bookworm is debootstrap's bookworm with python3 and
python3-numpy, so both sides run the same Debian packages (Python 3.11.2,
numpy 1.24.2).  The versions are read on both sides at run time and written
to the result file; a difference in Python, numpy or the BLAS library is
also written into every row (the Debian revisions of the packages may
differ by security updates: they are listed in the file).

Each comparison is interleaved: the series take turns in batches (A B A B,
the order rotating every round) so that drift of the machine hits all of
them.  Every call's answer is checked (exit status, or the numpy version it
printed or returned).  Writes results/docker_rows.json; when Docker is not
usable (STATE_DIR/unavailable from the setup, or a failure here) the rows
are written as unavailable with the reason.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import ours  # noqa: E402  (its Daemon: omnipkgd on a private runtime dir)

PY_HOST = "/usr/bin/python3.11"
LABEL = "org.omnipkg.bench"
PASS = "pass"
NUMPY_PY = "import numpy; print(numpy.__version__)"
NUMPY_JOB = "import numpy\nresult = numpy.__version__"
VERSIONS_PY = ("import json, os, sys, numpy; print(json.dumps({'python': sys.version.split()[0], "
               "'numpy': numpy.__version__, 'blas': os.path.realpath('/usr/lib/x86_64-linux-gnu/libblas.so.3')}))")
IDLE_PY = ("import os, sys, time, numpy; sys.stdout.write('ready %d\\n' % os.getpid()); "
           "sys.stdout.flush(); time.sleep(10**9)")
DPKG = ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "python3.11", "python3-numpy", "libblas3"]

# Every row this driver writes (a result of unavailable rows names them all).
HOT = ("dk_hot_ours_python_client", "dk_hot_docker_exec_api", "dk_hot_ours_cli", "dk_hot_docker_exec_cli",
       "dk_hot_host_python_c")
NUMPY = ("dk_numpy_ours_warm_worker", "dk_numpy_docker_exec_api", "dk_numpy_ours_cli",
         "dk_numpy_docker_exec_cli", "dk_numpy_host_python_c")
COLD = ("dk_cold_ours_new_worker_pass", "dk_cold_docker_run_pass", "dk_cold_ours_new_worker_numpy",
        "dk_cold_docker_run_numpy", "dk_cold_ours_daemon_start_first_call")
MEM_N = (1, 4, 16)


def mem_names(n):
    return ["dk_%s_mem_%dw_%s_pss" % (who, n, k) for who in ("ours", "docker")
            for k in ("worker", "helpers", "daemon", "total")] + \
           ["dk_docker_mem_%dw_cgroup_%s" % (n, k) for k in ("usage", "anon", "file")] + \
           ["dk_docker_mem_%dw_shim_pss" % n]


MEM = tuple(n for k in MEM_N for n in mem_names(k)) + ("dk_docker_mem_containerd_pss", "dk_host_bare_python_numpy_pss")
ALL = HOT + NUMPY + COLD + MEM


def expect(cond, what):
    if not cond:
        raise RuntimeError("wrong answer: " + what)


# ------------------------------------------------------------ Engine API

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Engine:
    """The Docker Engine API on a Unix socket: one kept-alive connection for
    plain requests, a new one for each attached (hijacked) stream."""

    def __init__(self, path):
        self.path = path
        self.conn = UnixHTTPConnection(path)
        self.api = ""
        self.version = self.call("GET", "/version")
        self.api = "/v" + self.version["ApiVersion"]

    def _do(self, conn, method, url, body):
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, self.api + url, body=json.dumps(body) if body is not None else None,
                     headers=headers)
        r = conn.getresponse()
        return r.status, r.read()

    def call(self, method, url, body=None, ok=(200, 201, 204)):
        try:
            st, data = self._do(self.conn, method, url, body)
        except (http.client.HTTPException, OSError):
            self.conn.close()                 # a dropped keep-alive: once more on a new one
            st, data = self._do(self.conn, method, url, body)
        if st not in ok:
            raise RuntimeError("Engine API %s %s: HTTP %d: %s" % (method, url, st, data[:300].decode("utf-8", "replace")))
        return json.loads(data) if data else None

    def stream(self, method, url, body=None):
        """An attached request: the raw multiplexed stream until the server
        closes it -> (stdout, stderr) bytes."""
        c = UnixHTTPConnection(self.path)
        try:
            st, data = self._do(c, method, url, body)
        finally:
            c.close()
        if st != 200:
            raise RuntimeError("Engine API %s %s: HTTP %d: %s" % (method, url, st, data[:300]))
        return demux(data)

    def exec_start(self, cid, argv):
        """create exec + start attached, the stream read to its end (the
        process has exited): the time a client pays to run argv.  The exit
        status is read afterwards, by exec_status, outside any timing."""
        eid = self.call("POST", "/containers/%s/exec" % cid,
                        {"AttachStdout": True, "AttachStderr": True, "Cmd": argv})["Id"]
        out, err = self.stream("POST", "/exec/%s/start" % eid, {"Detach": False, "Tty": False})
        return eid, out, err

    def exec_status(self, eid):
        return self.call("GET", "/exec/%s/json" % eid).get("ExitCode")

    def run_detached(self, name, argv, image):
        cid = self.call("POST", "/containers/create?name=%s" % name,
                        {"Image": image, "Cmd": argv, "Labels": {LABEL: "1"},
                         "HostConfig": {"NetworkMode": "none"}})["Id"]
        self.call("POST", "/containers/%s/start" % cid)
        return cid

    def inspect(self, cid):
        return self.call("GET", "/containers/%s/json" % cid)

    def logs(self, cid):
        c = UnixHTTPConnection(self.path)
        try:
            st, data = self._do(c, "GET", "/containers/%s/logs?stdout=1&stderr=1" % cid, None)
        finally:
            c.close()
        return demux(data)[0] if st == 200 else b""

    def remove(self, cid):
        self.call("DELETE", "/containers/%s?force=1" % cid, ok=(200, 204, 404))

    def ours(self):
        """The containers this bench labelled (a crashed run's included)."""
        q = json.dumps({"label": [LABEL]})
        return [c["Id"] for c in self.call("GET", "/containers/json?all=1&filters=%s" % urlq(q))]


def urlq(s):
    return "".join(c if c.isalnum() or c in "-_.~" else "%%%02X" % ord(c) for c in s)


def demux(data):
    """Docker's multiplexed stream (8-byte frame headers: stream, 0, 0, 0,
    big-endian size) -> (stdout, stderr)."""
    out, err, i = [], [], 0
    while i + 8 <= len(data):
        kind, size = data[i], int.from_bytes(data[i + 4:i + 8], "big")
        (err if kind == 2 else out).append(data[i + 8:i + 8 + size])
        i += 8 + size
    return b"".join(out), b"".join(err)


# ------------------------------------------------------------- /proc scan

def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def ppid(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        return int(st[st.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def pids_named(name):
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and comm(int(d)) == name]


def cgroup_memory(pid):
    """The memory figures of pid's cgroup: {"usage", "anon", "file", "version"}
    (v2: memory.current and memory.stat anon/file; v1: memory.usage_in_bytes
    and memory.stat total_rss/total_cache), or None."""
    try:
        with open("/proc/%d/cgroup" % pid) as f:
            lines = [ln.rstrip("\n").split(":", 2) for ln in f]
    except OSError:
        return None
    for _, ctrl, path in lines:
        if "memory" in ctrl.split(",") and os.path.isdir("/sys/fs/cgroup/memory" + path):
            d = "/sys/fs/cgroup/memory" + path
            st = read_kv(d + "/memory.stat")
            return {"usage": read_int(d + "/memory.usage_in_bytes"), "anon": st.get("total_rss", 0),
                    "file": st.get("total_cache", 0), "version": "v1", "path": d}
    for hid, ctrl, path in lines:
        if hid == "0" and ctrl == "":
            for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                d = root + path
                if os.path.exists(d + "/memory.current"):
                    st = read_kv(d + "/memory.stat")
                    return {"usage": read_int(d + "/memory.current"), "anon": st.get("anon", 0),
                            "file": st.get("file", 0), "version": "v2", "path": d}
    return None


def read_int(path):
    with open(path) as f:
        return int(f.read().split()[0])


def read_kv(path):
    out = {}
    try:
        with open(path) as f:
            for ln in f:
                k, _, v = ln.partition(" ")
                if v.strip().isdigit():
                    out[k] = int(v)
    except OSError:
        pass
    return out


def dpkg(argv_prefix=()):
    try:
        r = subprocess.run(list(argv_prefix) + DPKG, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True, timeout=120)
        return ", ".join(r.stdout.split("\n")[:-1]) if r.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


# --------------------------------------------------------------- driving

def interleave(series, rounds):
    """series: [(name, batch, fn)]; each round runs every series' batch (fn()
    -> seconds) in an order rotated each round.  -> {name: [seconds]}."""
    out = {name: [] for name, _, _ in series}
    for r in range(rounds):
        k = r % len(series)
        for name, batch, fn in series[k:] + series[:k]:
            for _ in range(batch):
                out[name].append(fn())
    return out


def timed(fn):
    def run():
        t0 = common.now()
        check = fn()
        dt = common.now() - t0
        if check:
            check()
        return dt
    return run


def cli_run(argv, want=None, env=None):
    """A whole command; checked after the clock stops."""
    def go():
        r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=120)

        def check():
            expect(r.returncode == 0 and (want is None or r.stdout.strip() == want),
                   "%s: status %d, stdout %r, stderr %r" % (" ".join(argv[:4]), r.returncode,
                                                             r.stdout[:80], r.stderr[-300:]))
        return check
    return timed(go)


class Bench:
    def __init__(self, state):
        self.state = state
        env = read_env(os.path.join(state, "env"))
        self.sock = env.get("DOCKER_SOCK", "/var/run/docker.sock")
        self.cli = env.get("DOCKER_CLI", "/usr/bin/docker")
        self.image = env.get("DOCKER_IMAGE", "omnibench-py:bookworm")
        self.started = env.get("DOCKER_STARTED") == "1"
        self.dk = [self.cli, "-H", "unix://" + self.sock]
        self.engine = Engine(self.sock)
        self.containers = []
        self.rows = []
        self.note = ""
        self.d = None
        self.c = None

    # -- bookkeeping
    def container(self, name, argv):
        cid = self.engine.run_detached("omnibench-%d-%s" % (os.getpid(), name), argv, self.image)
        self.containers.append(cid)
        pid = self.engine.inspect(cid)["State"]["Pid"]
        shim = ppid(pid)
        if shim and comm(shim).startswith("containerd-shim"):
            with open(os.path.join(self.state, "shims.pid"), "a") as f:
                f.write("%d\n" % shim)
        return cid, pid, shim

    def remove_all(self):
        for cid in self.containers:
            try:
                self.engine.remove(cid)
            except Exception as e:  # noqa: BLE001 - go on removing the others
                print("docker_rows: could not remove container %s: %s" % (cid[:12], e), flush=True)
        self.containers = []

    def add(self, r):
        if self.note and "status" not in r:
            r["differs"] = self.note
        self.rows.append(r)
        return r

    # -- versions on both sides
    def versions(self):
        """{"docker": its version, "docker_details": {...}}: the engine, the
        image, and the Python, numpy and Debian packages inside the container,
        on the host, and in our worker.  Sets self.note when Python, numpy or
        the BLAS differ between the sides (written into every row)."""
        v = {}
        for comp in self.engine.version.get("Components") or []:
            if comp.get("Name") in ("containerd", "runc"):
                v[comp["Name"]] = comp.get("Version", "")
        try:
            v["docker_cli"] = subprocess.run(self.dk + ["version", "--format", "{{.Client.Version}}"],
                                             stdout=subprocess.PIPE, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        info = self.engine.call("GET", "/info")
        v["docker_storage"] = "%s, cgroup v%s (%s driver)" % (info.get("Driver"), info.get("CgroupVersion", "1"),
                                                              info.get("CgroupDriver"))
        v["dockerd"] = "started by bench/docker_setup.sh" if self.started else "already running, left alone"
        img = self.engine.call("GET", "/images/%s/json" % self.image)
        v["docker_image"] = "%s %s, %.0f MB: %s" % (self.image, img["Id"][7:19], img.get("Size", 0) / 1e6,
                                                   ((img.get("Config") or {}).get("Labels") or {}).get(LABEL + ".source", ""))
        inside = subprocess.run(self.dk + ["run", "--rm", "--network", "none", self.image, "python3", "-c",
                                           VERSIONS_PY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, timeout=300)
        expect(inside.returncode == 0, "the image's python3: %s" % inside.stderr[-300:])
        vin = json.loads(inside.stdout)
        vin["dpkg"] = dpkg(self.dk + ["run", "--rm", "--network", "none", self.image])
        out = subprocess.run([PY_HOST, "-s", "-c", VERSIONS_PY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, timeout=120)
        expect(out.returncode == 0, "%s with numpy: %s" % (PY_HOST, out.stderr[-300:]))
        vout = json.loads(out.stdout)
        vout["dpkg"] = dpkg()
        r = ours.ok(self.c.execute("base", "import sys, numpy\nresult = {'python': sys.version.split()[0], "
                                   "'numpy': numpy.__version__, 'exe': sys.executable, 'file': numpy.__file__}",
                                   python_exe=PY_HOST))["job_result"]
        v["inside_container"] = "python %(python)s, numpy %(numpy)s, BLAS %(blas)s; %(dpkg)s" % vin
        v["outside_host"] = "python %(python)s, numpy %(numpy)s, BLAS %(blas)s; %(dpkg)s" % vout
        v["ours_worker"] = "python %(python)s (%(exe)s), numpy %(numpy)s (%(file)s)" % r
        diffs = [k for k in ("python", "numpy") if vin[k] != r[k]] + (["BLAS"] if vin["blas"] != vout["blas"] else [])
        if diffs:
            self.note = "inside and outside differ in %s: container %s / host %s" % (
                ", ".join(diffs), v["inside_container"], v["outside_host"])
            print("docker_rows: " + self.note, flush=True)
        pk_in, pk_out = set(vin["dpkg"].split(", ")), set(vout["dpkg"].split(", "))
        if pk_in != pk_out:
            v["package_revisions_differ"] = "container %s; host %s" % (
                ", ".join(sorted(pk_in - pk_out)) or "-", ", ".join(sorted(pk_out - pk_in)) or "-")
            print("docker_rows: Debian package versions differ%s: %s" % (
                "" if diffs else " (the Python and numpy versions do not)", v["package_revisions_differ"]), flush=True)
        self.want_numpy = vin["numpy"]
        self.want_numpy_ours = r["numpy"]
        ev = self.engine.version
        return {"docker": "%s (API %s)" % (ev.get("Version"), ev.get("ApiVersion")), "docker_details": v}

    # -- rows
    def api_exec(self, cid, argv, want=None):
        def go():
            eid, out, err = self.engine.exec_start(cid, argv)

            def check():
                code = self.engine.exec_status(eid)
                expect(code == 0 and (want is None or out.decode().strip() == want),
                       "exec %s: exit %r, stdout %r, stderr %r" % (argv[-1][:40], code, out[:80], err[-300:]))
            return check
        return timed(go)

    def ours_exec(self, code, want=None, tag=None):
        def go():
            r = self.c.execute("base", code, python_exe=PY_HOST, worker_tag=tag)

            def check():
                ours.ok(r)
                expect(want is None or r.get("job_result") == want, "ours gave %r" % r.get("job_result"))
            return check
        return timed(go)

    def ours_cli(self, code, want=None):
        return cli_run([os.path.join(ours.BUILD, "omnipkg"), "--socket", self.d.socket, "exec", "--spec", "base",
                        "--python", PY_HOST, "-c", code], want, self.d.env)

    def hot(self, cid):
        ours_client = self.ours_exec(PASS)
        api = self.api_exec(cid, ["python3", "-c", PASS])
        our_cli = self.ours_cli(PASS)
        dk_cli = cli_run(self.dk + ["exec", cid, "python3", "-c", PASS])
        host = cli_run([PY_HOST, "-c", PASS])
        for fn, k in ((ours_client, 200), (api, 5), (our_cli, 5), (dk_cli, 5), (host, 5)):
            for _ in range(k):
                fn()
        rounds = common.iters(40, 8)
        v = interleave([(HOT[0], 25, ours_client), (HOT[1], 5, api), (HOT[2], 5, our_cli),
                        (HOT[3], 5, dk_cli), (HOT[4], 5, host)], rounds)
        a = self.add(common.row(HOT[0], v[HOT[0]], extra={
            "call": "DaemonClient.execute(\"base\", \"pass\", python_exe=%r)" % PY_HOST}))
        c = self.add(common.row(HOT[2], v[HOT[2]], extra={
            "call": "omnipkg exec --spec base --python %s -c pass (whole process)" % PY_HOST}))
        self.add(common.row(HOT[1], v[HOT[1]], ref=(a["name"], a["p50"]), extra={
            "call": "Engine API on %s from Python http.client: POST /containers/C/exec + POST /exec/E/start, "
                    "the stream read to its end; the exit code (checked) is read after the clock stops" % self.sock}))
        self.add(common.row(HOT[3], v[HOT[3]], ref=(c["name"], c["p50"]), extra={
            "call": "docker exec C python3 -c pass (whole process)"}))
        self.add(common.row(HOT[4], v[HOT[4]], extra={
            "call": "%s -c pass on the host: a fresh interpreter, no container" % PY_HOST}))

    def numpy_hot(self, cid):
        want, wo = self.want_numpy, self.want_numpy_ours
        warm = self.ours_exec(NUMPY_JOB, wo)
        api = self.api_exec(cid, ["python3", "-c", NUMPY_PY], want)
        our_cli = self.ours_cli(NUMPY_PY, wo)
        dk_cli = cli_run(self.dk + ["exec", cid, "python3", "-c", NUMPY_PY], want)
        host = cli_run([PY_HOST, "-c", NUMPY_PY], wo)
        for fn, k in ((warm, 50), (api, 3), (our_cli, 3), (dk_cli, 3), (host, 3)):
            for _ in range(k):
                fn()
        rounds = common.iters(30, 6)
        v = interleave([(NUMPY[0], 25, warm), (NUMPY[1], 5, api), (NUMPY[2], 5, our_cli),
                        (NUMPY[3], 5, dk_cli), (NUMPY[4], 5, host)], rounds)
        self.add(common.row(NUMPY[0], v[NUMPY[0]], extra={
            "call": "DaemonClient.execute(\"base\", %r): a warm worker, numpy already imported by an earlier "
                    "call (a cache effect: the import itself is not paid again)" % NUMPY_JOB}))
        self.add(common.row(NUMPY[2], v[NUMPY[2]], extra={
            "call": "omnipkg exec --spec base --python %s -c %r: the same warm worker, whole process" % (PY_HOST, NUMPY_PY)}))
        self.add(common.row(NUMPY[1], v[NUMPY[1]], extra={
            "call": "Engine API exec of python3 -c %r in the running container: a fresh python3 that "
                    "imports numpy every time" % NUMPY_PY}))
        self.add(common.row(NUMPY[3], v[NUMPY[3]], extra={
            "call": "docker exec C python3 -c %r (whole process): a fresh python3 importing numpy" % NUMPY_PY}))
        self.add(common.row(NUMPY[4], v[NUMPY[4]], extra={
            "call": "%s -c %r on the host: a fresh interpreter importing numpy, no container" % (PY_HOST, NUMPY_PY)}))

    def cold(self):
        run = ["run", "--rm", "--network", "none", self.image, "python3", "-c"]
        dk_pass = cli_run(self.dk + run + [PASS])
        dk_numpy = cli_run(self.dk + run + [NUMPY_PY], self.want_numpy)

        def once(code, want):
            def go():
                r = self.c.run_once("base", code, python_exe=PY_HOST)

                def check():
                    ours.ok(r)
                    expect(want is None or r.get("job_result") == want, "run_once gave %r" % r.get("job_result"))
                return check
            return timed(go)

        def daemon_first_call():
            d = ours.Daemon()
            try:
                t0 = common.now()
                with open(d.log, "ab") as log:
                    d.proc = subprocess.Popen([os.path.join(ours.BUILD, "omnipkgd"), "--foreground"], env=d.env,
                                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True)
                deadline = t0 + 60
                while True:
                    try:
                        c = ours.DaemonClient(d.socket, timeout=120, auto_start=False, raise_errors=True)
                        r = c.execute("base", PASS, python_exe=PY_HOST)
                        break
                    except (ConnectionError, OSError):
                        if d.proc.poll() is not None or common.now() > deadline:
                            raise RuntimeError("omnipkgd did not answer: %s" % d.log_tail())
                        time.sleep(0.001)
                dt = common.now() - t0
                c.close()
                ours.ok(r)
                return dt
            finally:
                d.stop()

        series = [(COLD[0], 1, once(PASS, None)), (COLD[1], 1, dk_pass),
                  (COLD[2], 1, once(NUMPY_JOB, self.want_numpy_ours)), (COLD[3], 1, dk_numpy),
                  (COLD[4], 1, daemon_first_call)]
        for _, _, fn in series:
            fn()                                         # warm: the image and the files in the page cache
        v = interleave(series, common.iters(20, 5))
        a = self.add(common.row(COLD[0], v[COLD[0]], extra={
            "call": "DaemonClient.run_once(\"base\", \"pass\", python_exe=%r): a fresh worker forked from the "
                    "interpreter's warm zygote, gone afterwards" % PY_HOST}))
        self.add(common.row(COLD[1], v[COLD[1]], ref=(a["name"], a["p50"]), extra={
            "call": "docker run --rm --network none %s python3 -c pass (whole process)" % self.image}))
        b = self.add(common.row(COLD[2], v[COLD[2]], extra={
            "call": "DaemonClient.run_once(\"base\", %r, python_exe=%r): a fresh worker from the zygote "
                    "importing numpy, gone afterwards" % (NUMPY_JOB, PY_HOST)}))
        self.add(common.row(COLD[3], v[COLD[3]], ref=(b["name"], b["p50"]), extra={
            "call": "docker run --rm --network none %s python3 -c %r (whole process)" % (self.image, NUMPY_PY)}))
        self.add(common.row(COLD[4], v[COLD[4]], extra={
            "call": "omnipkgd started (fresh runtime dir) until its first answer to execute(\"base\", \"pass\", "
                    "python_exe=%r): daemon start, interpreter probe, zygote start, worker fork" % PY_HOST}))

    def memory(self):
        """n idle workers that imported numpy (one tag each) on a daemon of
        their own, beside n containers whose one process is python3 that
        imported numpy; n grows 1, 4, 16 on both sides, keeping the ones
        already there.  PSS throughout (common.memory_rows), and the
        containers' memory cgroups."""
        bare = common.bare_interpreter_memory(PY_HOST, "import numpy")
        self.add(common.value_row("dk_host_bare_python_numpy_pss", bare["pss"], "B", {
            "python": PY_HOST, "note": "a bare interpreter on the host that has imported numpy, idle"}))
        dockerd = self.dockerd_pid()
        d = ours.Daemon()
        wpids, cs = [], []
        try:
            d.start()
            c = d.client()
            for n in common.iters(MEM_N, MEM_N[:2]):
                while len(wpids) < n:
                    wpids.append(ours.ok(c.execute("base", common.MEM_CODE, python_exe=PY_HOST,
                                                   worker_tag="mem%d" % len(wpids)))["pid"])
                while len(cs) < n:
                    cs.append(self.container("mem%d" % len(cs), ["python3", "-c", IDLE_PY]))
                deadline = time.monotonic() + 120
                for cid, _, _ in cs:
                    while b"ready" not in self.engine.logs(cid):
                        if time.monotonic() > deadline:
                            raise RuntimeError("container %s did not import numpy within 120 s" % cid[:12])
                        time.sleep(0.05)
                time.sleep(0.5)
                st = ours.ok(c.status())
                zygotes = [z["pid"] for z in st.get("zygotes", []) if z.get("pid")]
                for r in common.memory_rows("dk_ours", n, wpids, zygotes, d.proc.pid,
                                            "workers on %s with the host's numpy, forked from its zygote; "
                                            "helpers = the zygotes" % PY_HOST):
                    self.add(r)
                shims = sorted({s for _, _, s in cs if s})
                containerd = pids_named("containerd")
                for r in common.memory_rows("dk_docker", n, [p for _, p, _ in cs], shims + containerd, dockerd,
                                            "one container per worker, its one process python3 that imported "
                                            "numpy; helpers = %d containerd-shim + containerd; daemon = dockerd"
                                            % len(shims)):
                    self.add(r)
                pss = lambda ps: sum((common.smaps_rollup(p) or {"pss": 0})["pss"] for p in ps)  # noqa: E731
                per_shim = sorted(pss([p]) for p in shims)
                self.add(common.value_row("dk_docker_mem_%dw_shim_pss" % n, per_shim[len(per_shim) // 2], "B", {
                    "containers": n, "shims": len(shims), "note": "median PSS of a containerd-shim-runc-v2"}))
                if n == 1:
                    self.add(common.value_row("dk_docker_mem_containerd_pss", pss(containerd), "B", {
                        "pids": containerd, "note": "containerd (dockerd's), with one container running"}))
                cg = [cgroup_memory(p) for _, p, _ in cs]
                cg = [m for m in cg if m]
                if not cg:
                    raise RuntimeError("no memory cgroup found for the containers")
                for k in ("usage", "anon", "file"):
                    vals = sorted(m[k] for m in cg)
                    self.add(common.value_row("dk_docker_mem_%dw_cgroup_%s" % (n, k), vals[len(vals) // 2], "B", {
                        "containers": n, "cgroup": cg[0]["version"],
                        "note": "median over the containers of their memory cgroup's %s" % {
                            "usage": "memory.current (v2) / memory.usage_in_bytes (v1)",
                            "anon": "memory.stat anon (v2) / total_rss (v1)",
                            "file": "memory.stat file (v2) / total_cache (v1): page cache charged to it"}[k]}))
            c.close()
        finally:
            d.stop()
            for cid, _, _ in cs:
                self.engine.remove(cid)
                self.containers.remove(cid)

    def dockerd_pid(self):
        try:
            with open(os.path.join(self.state, "dockerd.pid")) as f:
                p = int(f.read())
            if comm(p) == "dockerd":
                return p
        except (OSError, ValueError):
            pass
        found = pids_named("dockerd")
        if len(found) != 1:
            raise RuntimeError("cannot tell which dockerd serves %s (%d running)" % (self.sock, len(found)))
        return found[0]


def read_env(path):
    out = {}
    try:
        with open(path) as f:
            for ln in f:
                k, _, v = ln.strip().partition("=")
                if k:
                    out[k] = v
    except OSError:
        pass
    return out


def write_unavailable(why, versions=None):
    common.write("docker_rows", [common.unavailable(n, why) for n in ALL], versions)


def main(argv):
    state = os.path.abspath(argv[1] if len(argv) > 1 else os.path.join(
        os.environ.get("OMNI_RESULTS_DIR") or os.path.join(common.REPO, "results"), "tmp", "docker"))
    try:
        with open(os.path.join(state, "unavailable")) as f:
            why = f.read().strip()
    except OSError:
        why = None
    if why is not None:
        write_unavailable("Docker could not run here: " + why)
        return 0
    if not os.access(PY_HOST, os.X_OK):
        write_unavailable("%s is missing: our side of the comparison runs on the host's Debian Python" % PY_HOST)
        return 0
    try:
        b = Bench(state)
    except Exception as e:
        write_unavailable("the Docker Engine API did not answer on its socket: %s: %s" % (type(e).__name__, e))
        return 0
    for cid in b.engine.ours():                  # left behind by a run that was killed
        b.engine.remove(cid)
    versions = {}
    b.d = ours.Daemon()
    try:
        b.d.start()
        b.c = b.d.client()
        versions = b.versions()
        cid, _, _ = b.container("hot", ["sleep", "infinity"])
        sections = ((HOT, b.hot, (cid,)), (NUMPY, b.numpy_hot, (cid,)), (COLD, b.cold, ()), (MEM, b.memory, ()))
        for names, fn, args in sections:
            try:
                fn(*args)
            except Exception as e:
                got = {r["name"] for r in b.rows}
                for nm in names:
                    if nm not in got:
                        b.rows.append(common.unavailable(nm, "%s: %s" % (type(e).__name__, str(e)[:300])))
    except Exception as e:
        got = {r["name"] for r in b.rows}
        b.rows += [common.unavailable(n, "%s: %s" % (type(e).__name__, str(e)[:300])) for n in ALL if n not in got]
    finally:
        b.remove_all()
        if b.c:
            b.c.close()
        b.d.stop()
    common.write("docker_rows", b.rows, versions)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
