"""omnipkg.ray on a real two-node Ray cluster (ray.cluster_utils.Cluster)
on this one machine.

Ray comes from the package registry into .venv-ray/ (tests/ray/setup.sh,
Python 3.11, ray and numpy 1.26.4); the test the CTest entry runs
(RayOnTwoNodes) makes that venv, then runs this same file again under the
venv's python with OMNI_RAY_INNER=1, where load_tests picks the real tests
(TwoNodeCluster), and checks that every one of them ran and passed.  Where
Ray cannot be installed (no registry, no wheel) it skips, saying why.

The cluster: a head node (resource node_a) and a second node (node_b),
two logical CPUs and a 100 MB object store each, no dashboard, Ray's
files in a private temp dir.  Every node runs its own omnipkgd, started by
the first job that needs it, on the runtime dir <tmp>/n-<node id>
($OMNIPKG_RAY_RUNTIME_DIR), with this build's binary ($OMNIPKGD) and a
private home that links the numpy 1.26.4 and 2.2.6 bubbles.  At the end the
daemons are stopped (omnipkg.ray.stop_daemons), Ray is shut down, and
every process that carries this run's mark in its environment (raylets,
Ray's workers, daemons, their workers) must be gone: one that is left is
killed and fails the run, as does a sanitizer report in a daemon's log.
"""

import glob
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
import unittest

import harness
from test_daemon import link_bubble

HERE = os.path.dirname(os.path.abspath(__file__))
SETUP = os.path.join(harness.REPO, "tests", "ray", "setup.sh")
INNER = os.environ.get("OMNI_RAY_INNER") == "1"
MARK = "OMNI_RAY_TEST_RUN"          # in the environment of everything the cluster starts
NUMPYS = ("1.26.4", "2.2.6")
VERSION_CODE = ("import numpy, os\n"
                "result = {'numpy': numpy.__version__, 'pid': os.getpid(), "
                "'file': os.path.realpath(numpy.__file__)}")


def load_tests(loader, tests, pattern):
    """Outside the venv: the launcher and the checks that need no Ray;
    inside it (OMNI_RAY_INNER=1): the cluster tests."""
    classes = (TwoNodeCluster,) if INNER else (RayOnTwoNodes, WithoutRay, NodeDaemonStart)
    suite = unittest.TestSuite()
    for c in classes:
        suite.addTests(loader.loadTestsFromTestCase(c))
    return suite


def inner_test_names():
    return sorted(n for n in dir(TwoNodeCluster) if n.startswith("test_"))


class RayOnTwoNodes(unittest.TestCase):
    def test_cluster(self):
        why = harness.DaemonFixture.available()
        if why:
            self.skipTest(why)
        r = subprocess.run(["bash", SETUP], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=1200)
        if r.returncode == 2:
            why = "Ray cannot be installed here: " + r.stderr.strip().splitlines()[-1]
            print("test_ray: skipped: " + why, file=sys.stderr, flush=True)
            self.skipTest(why)
        self.assertEqual(r.returncode, 0, "tests/ray/setup.sh failed:\n" + r.stderr)
        py = os.path.join(r.stdout.strip().splitlines()[-1], "bin", "python")
        env = dict(os.environ, OMNI_RAY_INNER="1", PYTHONDONTWRITEBYTECODE="1")
        t0 = time.monotonic()
        # Ray's own unclosed files would fill the log with warnings.
        p = subprocess.run([py, "-W", "ignore::ResourceWarning", "-m", "unittest", "-v", "test_ray"], cwd=HERE, env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=540)
        out = p.stdout + p.stderr
        sys.stderr.write(out[-12000:])
        sys.stderr.write("test_ray: the cluster tests took %.1f s\n" % (time.monotonic() - t0))
        self.assertEqual(p.returncode, 0, out[-4000:])
        # Every one ran and passed: unittest's summary is a bare "OK" only
        # when nothing failed, was skipped or was an expected failure.
        ran = re.search(r"^Ran (\d+) tests? in [^\n]*\n\n(.*)$", out, re.M)
        self.assertIsNotNone(ran, out[-2000:])
        self.assertEqual(int(ran.group(1)), len(inner_test_names()), out[-2000:])
        self.assertEqual(ran.group(2), "OK", out[-2000:])


class WithoutRay(unittest.TestCase):
    def test_import_error_names_the_fix(self):
        """Without Ray, omnipkg.ray imports, and its calls raise an
        ImportError that says what to install."""
        code = ("import sys; sys.modules['ray'] = None\n"
                "import omnipkg.ray as r\n"
                "try:\n    r.remote_exec('base', 'pass')\n"
                "except ImportError as e:\n    print('ImportError:', e)\n")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, PYTHONPATH=os.path.join(
                               harness.REPO, "src", "python")))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("ImportError: omnipkg.ray needs Ray", p.stdout)
        self.assertIn("pip install ray", p.stdout)


class NodeDaemonStart(unittest.TestCase):
    """The first jobs on a node come from several Ray workers at once, each
    starting the node's daemon when none answers: every one of them must
    get its job run, by the one daemon that won."""

    ROUNDS, CLIENTS = 3, 4
    CHILD = ("import os, sys, time\n"
             "from omnipkg.client import DaemonClient\n"
             "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
             "r = DaemonClient(sys.argv[1], raise_errors=True).execute('base', "
             "'import os\\nresult = os.getpid()', python_exe=sys.executable)\n"
             "print(r.get('job_result') if r['success'] else 'failed: ' + r['error'])\n")

    def test_concurrent_autostart(self):
        why = harness.DaemonFixture.available()
        if why:
            self.skipTest(why)
        tmp = tempfile.mkdtemp(prefix="omr-", dir="/tmp")
        env = dict(os.environ, OMNIPKGD=os.path.join(harness.build_dir(), "omnipkgd"),
                   OMNIPKG_HOME=tmp, OMNIPKG_CONFIG=os.path.join(tmp, "config.json"),
                   PYTHONPATH=os.path.join(harness.REPO, "src", "python"), **{MARK: tmp})
        for k in ("OMNIPKG_RUNTIME_DIR", "OMNIPKG_SOCKET", "OMNIPKG_DAEMON_CHILD"):
            env.pop(k, None)
        with open(env["OMNIPKG_CONFIG"], "w") as f:
            f.write('{"mount": ""}\n')
        done = False
        try:
            for i in range(self.ROUNDS):
                rt = os.path.join(tmp, "rt%d" % i)
                go = os.path.join(tmp, "go%d" % i)
                sock = os.path.join(rt, "omnipkgd.sock")
                os.mkdir(rt, 0o700)
                kids = [subprocess.Popen([sys.executable, "-c", self.CHILD, sock, go], env=env,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
                        for _ in range(self.CLIENTS)]
                time.sleep(0.3)             # all of them waiting at the gate
                open(go, "w").close()
                outs = [k.communicate(timeout=120) for k in kids]
                daemon = int(read(os.path.join(rt, "omnipkgd.pid")).split()[0])
                for k, (out, err) in zip(kids, outs):
                    self.assertEqual(k.returncode, 0, err)
                    self.assertIn(daemon, ancestors(int(out.strip())), (out, err))
                from omnipkg.client import DaemonClient
                DaemonClient(sock, auto_start=False, raise_errors=True).shutdown()
                end = time.monotonic() + 15
                while harness.proc_stat(daemon):
                    self.assertLess(time.monotonic(), end, "omnipkgd %d did not stop" % daemon)
                    time.sleep(0.02)
            done = True
        finally:
            left = {p: harness.proc_cmdline(p) for p in marked_pids(tmp)}
            for p in left:
                os.kill(p, signal.SIGKILL)
            mounts = harness.unmount_below(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        if done:         # else the failure above says more than what it left
            self.assertEqual((left, mounts), ({}, []), "processes or mounts left behind")


def marked_pids(run):
    """Live processes whose environment carries MARK=run (not this one)."""
    mark = ("%s=%s" % (MARK, run)).encode()
    return [p for p in harness.all_pids()
            if p != os.getpid() and harness.proc_stat(p) and mark in harness.proc_environ(p)]


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def ancestors(pid):
    out = []
    while pid > 1 and len(out) < 64:
        st = harness.proc_stat(pid)
        if st is None:
            break
        pid = st[0]
        out.append(pid)
    return out


class TwoNodeCluster(unittest.TestCase):
    """Runs only under .venv-ray's python (see RayOnTwoNodes)."""

    @classmethod
    def setUpClass(cls):
        import ray
        from ray.cluster_utils import Cluster
        cls.ray = ray
        cls.cluster = None
        # /tmp, not $TMPDIR: Ray's and our sockets live below it (108-byte limit).
        cls.tmp = tempfile.mkdtemp(prefix="omr-", dir="/tmp")
        try:
            home = cls.home = os.path.join(cls.tmp, "home")
            os.mkdir(home, 0o700)
            for v in NUMPYS:
                link_bubble(None, types.SimpleNamespace(home=home), "3.11", "numpy", v)
            with open(os.path.join(home, "config.json"), "w") as f:
                f.write('{"mount": ""}\n')
            for k in ("OMNIPKG_RUNTIME_DIR", "OMNIPKG_SOCKET", "OMNIPKG_DAEMON_CHILD"):
                os.environ.pop(k, None)
            # Inherited by the raylets, so by Ray's workers and the daemons they start.
            os.environ.update({
                MARK: cls.tmp, "OMNIPKG_HOME": home,
                "OMNIPKG_CONFIG": os.path.join(home, "config.json"),
                "OMNIPKGD": os.path.join(harness.build_dir(), "omnipkgd"),
                "OMNIPKG_RAY_RUNTIME_DIR": os.path.join(cls.tmp, "n-{node_id}"),
                "RAY_TMPDIR": cls.tmp, "RAY_USAGE_STATS_ENABLED": "0"})
            common = {"num_cpus": 2, "object_store_memory": 100 << 20}
            cls.cluster = Cluster(initialize_head=True, head_node_args=dict(
                common, resources={"node_a": 1}, include_dashboard=False))
            b = cls.cluster.add_node(**dict(common, resources={"node_b": 1}))
            cls.cluster.wait_for_nodes()
            ray.init(address=cls.cluster.address, log_to_driver=False)
            cls.A, cls.B = cls.cluster.head_node.node_id, b.node_id
            from omnipkg import ray as oray
            cls.oray = oray
        except BaseException:
            cls.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        problems = cls.cleanup()
        if problems:
            raise AssertionError("\n".join(problems))

    @classmethod
    def cleanup(cls):
        """Daemons stopped, Ray shut down, nothing of this run left."""
        problems = []
        ray = cls.ray
        if cls.cluster is not None:
            if ray.is_initialized():
                try:
                    stopped = cls.oray.stop_daemons()
                    print("daemons stopped: %s" % stopped, file=sys.stderr)
                except Exception as e:
                    problems.append("stop_daemons failed: %s: %s" % (type(e).__name__, e))
                ray.shutdown()
            cls.cluster.shutdown()
        for rt in sorted(os.listdir(cls.tmp)) if os.path.isdir(cls.tmp) else ():
            if rt.startswith("n-") and os.path.exists(os.path.join(cls.tmp, rt, "omnipkgd.sock")):
                problems.append("%s/omnipkgd.sock left behind: its daemon was not stopped" % rt)
        deadline = time.monotonic() + 15
        while marked_pids(cls.tmp) and time.monotonic() < deadline:
            time.sleep(0.1)
        for p in marked_pids(cls.tmp):
            problems.append("pid %d left running, killed: %s" % (p, harness.proc_cmdline(p)))
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # A daemon's tmpfs for its segments (as root) goes with it.
        for mp in harness.unmount_below(cls.tmp):
            problems.append("mount %s left behind" % mp)
        for path in sorted(glob.glob(os.path.join(cls.tmp, "n-*", "omnipkgd.log"))):
            with open(path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            hits = [i for i, ln in enumerate(lines)
                    if any(m in ln for m in harness.SANITIZER_MARKS)]
            if hits:
                problems.append("sanitizer report in %s:\n%s"
                                % (path, "\n".join(lines[max(0, hits[0] - 2):hits[0] + 40])))
        if problems:
            problems.append("files kept in %s" % cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)
        return problems

    # -- helpers

    def rt(self, node):
        return os.path.join(self.tmp, "n-" + node)

    def daemon_pid(self, node):
        with open(os.path.join(self.rt(node), "omnipkgd.pid")) as f:
            return int(f.read().split()[0])

    def check_reply(self, r, node, spec=None):
        """r is a reply of a job that ran on node, through node's own
        daemon: its worker descends from the daemon whose pid file is in
        node's runtime dir."""
        self.assertTrue(r["success"], r)
        self.assertEqual(r["node_id"], node)
        self.assertEqual(r["runtime_dir"], self.rt(node))
        self.assertEqual(r["hostname"], socket.gethostname())
        self.assertEqual(r["worker_pid"], r["pid"])
        self.assertIn(self.daemon_pid(node), ancestors(r["pid"]),
                      "worker %d does not descend from node %s's daemon" % (r["pid"], node[:8]))
        if spec:
            v = spec.split("==")[1]
            self.assertEqual(r["numpy"], v)
            bubble = os.path.realpath(os.path.join(self.home, "bubbles", "cp311", "numpy-" + v))
            self.assertTrue(r["file"].startswith(bubble + "/"), r["file"])

    # -- tests (numbered: the daemon kill runs last)

    def test_1_both_versions_on_both_nodes(self):
        """numpy 1.26.4 and 2.2.6 on each node, placed by node affinity and
        by custom resources; each job went through its node's daemon."""
        ray, oray = self.ray, self.oray
        jobs = []
        for node, where in ((self.A, {"node_id": self.A}), (self.B, {"resources": {"node_b": 1}})):
            for v in NUMPYS:
                spec = "numpy==" + v
                jobs.append((node, spec, oray.remote_exec(spec, VERSION_CODE, python="3.11",
                                                          reply=True, **where)))
        for node, spec, ref in jobs:
            self.check_reply(ray.get(ref, timeout=120), node, spec)
        self.assertNotEqual(self.daemon_pid(self.A), self.daemon_pid(self.B))
        # SPREAD, on the Ray workers' own interpreter (the venv's, whose
        # numpy 1.26.4 the bubble must shadow): wherever each job went, it
        # went through that node's daemon.
        refs = [oray.remote_exec("numpy==2.2.6", VERSION_CODE, reply=True,
                                 scheduling_strategy="SPREAD") for _ in range(4)]
        for r in ray.get(refs, timeout=120):
            self.assertIn(r["node_id"], (self.A, self.B))
            self.check_reply(r, r["node_id"], "numpy==2.2.6")
            self.assertEqual(r["python"], sys.executable)

    def test_2_array_made_on_one_node_used_on_the_other(self):
        """An array a numpy 1.26.4 job makes on node A reaches a numpy
        2.2.6 job on node B through Ray's object store, bit for bit, bound
        from one of B's daemon's segments; B's array result comes back."""
        ray, oray = self.ray, self.oray
        made = oray.remote_exec("numpy==1.26.4",
                                "import numpy\nresult = numpy.random.default_rng(7)"
                                ".standard_normal(1 << 20)", python="3.11", node_id=self.A)
        seen = oray.remote_exec(
            "numpy==2.2.6",
            "import hashlib, numpy, os\n"
            "result = {'sha': hashlib.sha256(x.tobytes()).hexdigest(), 'dtype': str(x.dtype), "
            "'shape': list(x.shape), 'segment': input_data['shm_in']['x']['name'], "
            "'numpy': numpy.__version__, 'pid': os.getpid(), 'file': os.path.realpath(numpy.__file__)}",
            python="3.11", data={"x": made}, node_id=self.B, reply=True)
        back = oray.remote_exec("numpy==2.2.6", "result = x[::-1] * 1", python="3.11",
                                data={"x": made}, node_id=self.B)
        want = ray.get(made, timeout=120)
        self.assertEqual((want.dtype.str, want.shape), ("<f8", (1 << 20,)))
        r = ray.get(seen, timeout=120)
        self.check_reply(r, self.B, "numpy==2.2.6")
        self.assertEqual((r["dtype"], r["shape"]), ("float64", [1 << 20]))
        self.assertEqual(r["sha"], hashlib.sha256(want.tobytes()).hexdigest())
        self.assertTrue(r["segment"])
        got = ray.get(back, timeout=120)
        self.assertEqual(got.tobytes(), want[::-1].tobytes())

    def test_3_node_actor_keeps_its_worker(self):
        """A Node actor's jobs reuse one connection and one warm worker on
        its node; it takes ObjectRefs made elsewhere as data."""
        ray, oray = self.ray, self.oray
        n = oray.Node(node_id=self.B)
        try:
            info = ray.get(n.info(), timeout=120)
            self.assertEqual(info["node_id"], self.B)
            self.assertEqual(info["runtime_dir"], self.rt(self.B))
            pids = ray.get([n.exec("numpy==1.26.4", "import os\nresult = os.getpid()",
                                   python="3.11") for _ in range(6)], timeout=120)
            self.assertEqual(len(set(pids)), 1, pids)
            self.assertIn(self.daemon_pid(self.B), ancestors(pids[0]))
            a = oray.remote_exec("numpy==2.2.6", "import numpy\nresult = numpy.arange(100000.0)",
                                 python="3.11", node_id=self.A)
            total = n.exec("numpy==1.26.4", "result = float(x.sum())", python="3.11",
                           data={"x": a})
            self.assertEqual(ray.get(total, timeout=120), 99999 * 100000 / 2)
        finally:
            n.kill()

    def test_4_failures_keep_the_daemons_reason(self):
        ray, oray = self.ray, self.oray
        cases = (("numpy==9.9.9", "pass", None, "nobubble", "refused"),
                 ("numpy=9", "pass", None, "badspec", "refused"),
                 ("base", "1 / 0", None, "exception", "job"),
                 ("base", "import time\ntime.sleep(30)", 1, "timeout", "job"))
        refs = [(c, oray.remote_exec(c[0], c[1], python="3.11", timeout=c[2], node_id=self.B))
                for c in cases]
        for (spec, code, _, reason, klass), ref in refs:
            with self.assertRaises(oray.JobFailed) as cm:
                ray.get(ref, timeout=120)
            e = cm.exception
            self.assertIsInstance(e, ray.exceptions.RayTaskError)
            self.assertEqual((e.reason, e.reason_class, e.node_id), (reason, klass, self.B),
                             str(e))
        with self.assertRaises(oray.JobFailed) as cm:
            ray.get(refs[2][1])
        self.assertIn("ZeroDivisionError", cm.exception.error)
        self.assertIn("ZeroDivisionError", cm.exception.traceback)
        with self.assertRaises(TypeError):
            oray.remote_exec("base", "pass", data=[1])

    def test_5_daemon_killed_mid_run(self):
        """A node's daemon killed (SIGKILL) while a job runs: the job fails
        with reason "lost", its worker goes too, the next job on that node
        starts a new daemon, and the other node's daemon never notices.
        SIGTERM instead: the daemon's own reason, "shutdown"."""
        ray, oray = self.ray, self.oray
        a0 = ray.get(oray.remote_exec("base", "import os\nresult = {'pid': os.getpid()}",
                                      python="3.11", node_id=self.A, reply=True), timeout=120)
        a_daemon = self.daemon_pid(self.A)
        for sig, reason, klass in ((signal.SIGKILL, "lost", "system"),
                                   (signal.SIGTERM, "shutdown", "system")):
            started = os.path.join(self.tmp, "started-%d" % sig)
            ref = oray.remote_exec(
                "base", "import os, time\nwith open(%r, 'w') as f: f.write(str(os.getpid()))\n"
                "time.sleep(60)" % started, python="3.11", node_id=self.B)
            end = time.monotonic() + 60
            while not read(started):
                self.assertLess(time.monotonic(), end, "the job never started")
                time.sleep(0.02)
            worker = int(read(started))
            victim = self.daemon_pid(self.B)
            self.assertIn(victim, ancestors(worker))
            os.kill(victim, sig)
            with self.assertRaises(oray.JobFailed) as cm:
                ray.get(ref, timeout=60)
            e = cm.exception
            self.assertEqual((e.reason, e.reason_class, e.node_id), (reason, klass, self.B),
                             str(e))
            end = time.monotonic() + 15
            while harness.proc_stat(worker) or harness.proc_stat(victim):
                self.assertLess(time.monotonic(), end, "the daemon or its worker outlived it")
                time.sleep(0.02)
            r = ray.get(oray.remote_exec("numpy==2.2.6", VERSION_CODE, python="3.11",
                                         node_id=self.B, reply=True), timeout=120)
            self.assertNotEqual(self.daemon_pid(self.B), victim)
            self.check_reply(r, self.B, "numpy==2.2.6")
        a1 = ray.get(oray.remote_exec("base", "import os\nresult = {'pid': os.getpid()}",
                                      python="3.11", node_id=self.A, reply=True), timeout=120)
        self.assertEqual(self.daemon_pid(self.A), a_daemon)
        self.assertEqual(a1["pid"], a0["pid"])      # the same warm worker


if __name__ == "__main__":
    unittest.main()
