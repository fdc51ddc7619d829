"""Two numpy versions from one Ray cluster: Ray's own isolation (a
runtime_env per version, {"pip": ["numpy==X"]}) beside omnipkg.ray (the
node's omnipkgd and its bubbles), in one run.

    .venv-ray/bin/python bench/py/ray_rows.py      (after tests/ray/setup.sh)
    python3 bench/py/ray_rows.py --unavailable WHY  (every row unavailable: no Ray)

The job is the same everywhere: import numpy, return its version and a
small sum, checked on every call.  Ray runs on this machine as one node
(2 logical CPUs, a 100 MB object store, no dashboard, its files in a
private temp dir); omnipkg.ray's daemon runs on a private runtime dir
with the default home, so the bubbles of scripts/bubbles.sh are found,
and its workers on Python 3.11 (as are Ray's).  Rows:

  ray_first_*      the first call of each version, one sample each: for
                   runtime_env, the virtualenv made and numpy installed by
                   pip (pip's own cache is warm after the first run ever);
                   for omnipkg, the node's daemon started (first call
                   only), a zygote, a worker, numpy imported
  ray_steady_*     calls alternating 1.26.4 and 2.2.6 after those, the
                   series interleaved in rounds (the order rotating) so
                   that drift hits all: runtime_env tasks, omnipkg.ray
                   tasks (remote_exec), calls of one omnipkg.ray Node
                   actor, and a plain Ray task on the driver's own numpy
                   (one version only: the floor of a Ray round trip)

Writes results/ray.json; a row that could not run (no Ray, no registry for
runtime_env's pip) is written as unavailable with the reason.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SRC = os.path.join(common.REPO, "src", "python")
sys.path.insert(0, SRC)

BUILD = os.path.abspath(os.environ.get("OMNI_BUILD") or os.path.join(common.REPO, "build"))
VERSIONS = ("1.26.4", "2.2.6")
CODE = "import numpy\nresult = [numpy.__version__, float(numpy.arange(1000.0).sum())]"
SUM = 499500.0
FIRST_TIMEOUT = 900             # a runtime_env's first call installs numpy with pip


def vname(v):
    return v.replace(".", "_")


FIRST = [("ray_first_runtime_env_pip_numpy_%s" % vname(v), "ray_first_omnipkg_numpy_%s" % vname(v))
         for v in VERSIONS]
STEADY = ("ray_steady_runtime_env_pip", "ray_steady_omnipkg_task", "ray_steady_omnipkg_actor",
          "ray_steady_plain_task")
ALL = tuple(n for pair in FIRST for n in pair) + STEADY


def numpy_job():
    import numpy
    return [numpy.__version__, float(numpy.arange(1000.0).sum())]


def reason(e):
    """A failure in one line: its type and the last line of its message
    (Ray's errors carry whole tracebacks)."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return "%s: %s" % (type(e).__name__, lines[-1].strip()[:400] if lines else "")


def check(got, v):
    if list(got) != [v, SUM]:
        raise RuntimeError("wrong answer: wanted numpy %s and %r, got %r" % (v, SUM, got))


def timed(call, v):
    t0 = common.now()
    got = call(v)
    dt = common.now() - t0
    check(got, v)
    return dt


def unmount_below(path):
    """Detaches what is mounted below path: the tmpfs a daemon (as root)
    keeps its segments on, left there when the daemon did not stop."""
    with open("/proc/self/mounts") as f:
        found = [ln.split()[1] for ln in f if ln.split()[1].startswith(path + "/")]
    for mp in sorted(found, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def write_unavailable(why):
    common.write("ray", [common.unavailable(n, why) for n in ALL])


def main(argv):
    if len(argv) == 3 and argv[1] == "--unavailable":
        write_unavailable(argv[2])
        return 0
    try:
        import ray
    except ImportError as e:
        write_unavailable("Ray is not installed: %s" % e)
        return 0
    # run.sh's time limit ends us with SIGTERM: the clean-up below still runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from omnipkg import ray as oray

    tmp = tempfile.mkdtemp(prefix="omrb-", dir="/tmp")     # short: sockets live below it
    # Ray's workers import omnipkg as the driver does: from this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [SRC] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    os.environ.update(RAY_TMPDIR=tmp, RAY_USAGE_STATS_ENABLED="0",
                      OMNIPKGD=os.path.join(BUILD, "omnipkgd"),
                      OMNIPKG_RAY_RUNTIME_DIR=os.path.join(tmp, "n-{node_id}"))
    for k in ("OMNIPKG_RUNTIME_DIR", "OMNIPKG_SOCKET", "OMNIPKG_DAEMON_CHILD", "OMNIPKG_CONFIG"):
        os.environ.pop(k, None)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        f.write('{"mount": ""}\n')
    os.environ["OMNIPKG_CONFIG"] = os.path.join(tmp, "config.json")
    rows, ok = {}, False
    ray.init(num_cpus=2, object_store_memory=100 << 20, include_dashboard=False,
             log_to_driver=False)
    try:
        py311 = sys.executable
        env_task = {v: ray.remote(numpy_job).options(runtime_env={"pip": ["numpy==" + v]})
                    for v in VERSIONS}
        plain = ray.remote(numpy_job)
        node = None

        def pip_call(v):
            return ray.get(env_task[v].remote(), timeout=FIRST_TIMEOUT)

        def omni_call(v):
            return ray.get(oray.remote_exec("numpy==" + v, CODE, python=py311), timeout=300)

        def actor_call(v):
            return ray.get(node.exec("numpy==" + v, CODE, python=py311), timeout=300)

        def plain_call(v):
            return ray.get(plain.remote(), timeout=300)

        import numpy
        floor_v = numpy.__version__
        timed(plain_call, floor_v)        # Ray's first worker, charged to nobody
        pip_why = None
        for (pip_name, omni_name), v in zip(FIRST, VERSIONS):
            rows[omni_name] = common.row(omni_name, [timed(omni_call, v)], extra={
                "call": "ray.get(omnipkg.ray.remote_exec(\"numpy==%s\", ...)): first call%s"
                        % (v, ", the node's omnipkgd started by it" if v == VERSIONS[0] else "")})
            if pip_why:
                rows[pip_name] = common.unavailable(pip_name, pip_why)
                continue
            try:
                rows[pip_name] = common.row(pip_name, [timed(pip_call, v)], extra={
                    "call": "ray.get(f.options(runtime_env={\"pip\": [\"numpy==%s\"]}).remote()): "
                            "first call, the virtualenv made and numpy installed" % v})
            except Exception as e:      # no registry, a pip failure: say so, go on
                pip_why = "runtime_env pip failed: " + reason(e)
                rows[pip_name] = common.unavailable(pip_name, pip_why)
        node = oray.Node()
        for v in VERSIONS:                # warm: the actor's connection and workers
            timed(actor_call, v)

        series = [(STEADY[1], omni_call), (STEADY[2], actor_call)]
        if not pip_why:
            series.insert(0, (STEADY[0], pip_call))
        samples = {name: [] for name, _ in series}
        samples[STEADY[3]] = []
        for r in range(common.iters(30, 6)):
            k = r % (len(series) + 1)
            order = (series + [(STEADY[3], None)])[k:] + (series + [(STEADY[3], None)])[:k]
            for name, fn in order:
                for _ in range(2):
                    for v in VERSIONS:
                        if fn is None:
                            samples[name].append(timed(plain_call, floor_v))
                        else:
                            samples[name].append(timed(fn, v))
        notes = {
            STEADY[0]: "ray.get(f.options(runtime_env={\"pip\": [\"numpy==X\"]}).remote()), X "
                       "alternating 1.26.4 and 2.2.6: Ray's worker of each runtime env, kept",
            STEADY[1]: "ray.get(omnipkg.ray.remote_exec(\"numpy==X\", ...)), X alternating: a Ray "
                       "task that forwards to the node's omnipkgd (a warm worker per version)",
            STEADY[2]: "ray.get(omnipkg.ray.Node().exec(\"numpy==X\", ...)), X alternating: "
                       "one actor holding its connection to the node's omnipkgd",
            STEADY[3]: "ray.get(f.remote()) of the same function on the driver's numpy %s: a Ray "
                       "task round trip, no second version" % floor_v,
        }
        for name in STEADY:
            if name in samples:
                rows[name] = common.row(name, samples[name], extra={
                    "call": notes[name], "over_100ms": sum(1 for t in samples[name] if t > 0.1)})
            else:
                rows[name] = common.unavailable(name, pip_why)
        node.kill()
        ok = True
    except Exception as e:
        why = reason(e)
        for n in ALL:
            rows.setdefault(n, common.unavailable(n, why))
    finally:
        try:
            oray.stop_daemons()
        except Exception as e:
            print("ray_rows: stopping the node's omnipkgd failed: %s" % e, flush=True)
        ray.shutdown()
        unmount_below(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    common.write("ray", [rows[n] for n in ALL], {"ray": "ray %s" % ray.__version__})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
