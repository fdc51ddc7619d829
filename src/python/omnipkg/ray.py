"""omnipkg on a Ray cluster: jobs (spec, python, code, data) placed by Ray,
run by the omnipkgd of the node Ray chose (optional; needs Ray).

    import ray, numpy as np
    from omnipkg import ray as oray

    ray.init(address="auto")
    a = oray.remote_exec("numpy==1.26.4", "import numpy\nresult = numpy.arange(4.0) * 2",
                         node_id=some_node)                       # an ObjectRef
    b = oray.remote_exec("numpy==2.2.6", "result = float(x.sum())", data={"x": a},
                         scheduling_strategy="SPREAD")
    ray.get(b)                                                    # 12.0

A job is a Ray task (remote_exec) or a call of a per-node actor (Node),
placed by Ray's own scheduling: node_id (a hard NodeAffinitySchedulingStrategy),
any scheduling_strategy ("SPREAD", a placement group's...), custom
resources.  On the node it goes to that node's omnipkgd through the Python
client (DaemonClient), which starts the daemon when none answers.  Each
node has its own runtime dir: the runtime_dir argument, else
$OMNIPKG_RAY_RUNTIME_DIR as the node sees it, else the client's usual one
($OMNIPKG_RUNTIME_DIR, $XDG_RUNTIME_DIR/omnipkg, /tmp/omnipkg-<uid>); a
"{node_id}" in the first two is replaced by the node's id, so nodes that
share a machine get a daemon each.  The daemon binary is found as the
client finds it ($OMNIPKGD, else omnipkgd on PATH of the node).

Arrays travel as Ray objects: data maps names to ndarrays or ObjectRefs of
ndarrays, which Ray fetches to the node (through its object store when
another node made them); there each is copied once into one of the
daemon's shared segments and bound in the job as a read-only view under its
name (execute_shm).  The ObjectRef resolves to the job's `result` (an
ndarray result goes into Ray's object store, ready to be the data of the
next job), or with reply=True to the whole reply (the client's dict, plus
node_id, runtime_dir and hostname).

A job that fails raises JobFailed from ray.get (Ray wraps it, keeping it an
instance of JobFailed): .reason is the daemon's reason ("exception",
"timeout", "signal", "memory", "nobubble", "badspec", ...), or one of two
of this module's own when no daemon gave one: "lost" (the connection
broke while the job ran: the node's daemon died) and "unreachable" (the
daemon could not be reached or started on the node).  .reason_class is
"job", "refused" or "system" (omnipkg.reason_class), .reply the reply.

The omnipkg package must be importable on every node (installed, on
PYTHONPATH, or shipped with runtime_env={"py_modules": [omnipkg]}); Ray is
imported by the calls that need it.
"""

import os
import socket
import threading
import time

from . import client as _client

RUNTIME_DIR_ENV = "OMNIPKG_RAY_RUNTIME_DIR"
NODE_CONCURRENCY = 16           # jobs in flight per Node actor (a connection's limit)
_REASON_CLASS = {"lost": "system", "unreachable": "system"}


def _ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError("omnipkg.ray needs Ray on this machine and on every node of the "
                          "cluster: pip install ray (%s)" % e) from None
    return ray


class JobFailed(RuntimeError):
    """A job on a Ray node that did not succeed.  reason: the daemon's, or
    "lost" / "unreachable" (see the module's note); reply: the reply dict
    (error, traceback, stdout, stderr, worker_pid ...); node_id: the node
    it ran on."""

    def __init__(self, message, reason=None, reply=None, node_id=None):
        RuntimeError.__init__(self, message)
        self.reason = reason
        self.reply = dict(reply or {})
        self.node_id = node_id

    def __reduce__(self):
        return (JobFailed, (self.args[0], self.reason, self.reply, self.node_id))

    @property
    def reason_class(self):
        return _client.reason_class(self.reason) or _REASON_CLASS.get(self.reason)

    @property
    def error(self):
        return self.reply.get("error", "")

    @property
    def traceback(self):
        return self.reply.get("traceback", "")

    @property
    def stdout(self):
        return self.reply.get("stdout", "")

    @property
    def stderr(self):
        return self.reply.get("stderr", "")


# ------------------------------------------------------------ on the node

_clients = {}                   # socket path -> DaemonClient, per process
_clients_lock = threading.Lock()


def node_id():
    """The id (hex) of the Ray node this process runs on."""
    return _ray().get_runtime_context().get_node_id()


def node_runtime_dir(runtime_dir=None, node=None):
    """The runtime dir of this node's omnipkgd (see the module's note)."""
    t = runtime_dir or os.environ.get(RUNTIME_DIR_ENV)
    if not t:
        return os.path.dirname(_client.default_socket_path())
    if "{node_id}" in t:
        t = t.replace("{node_id}", node or node_id())
    return os.path.abspath(t)


def _client_for(rt):
    """This process's DaemonClient of runtime dir rt, made on first use:
    every job of a Ray worker process goes over one connection."""
    path = os.path.join(rt, "omnipkgd.sock")
    with _clients_lock:
        c = _clients.get(path)
        if c is None:
            os.makedirs(rt, 0o700, exist_ok=True)
            c = _clients[path] = _client.DaemonClient(path, raise_errors=True)
        return c


def _split(data):
    """data ({name: value}) as (names, values): the values go to Ray as
    arguments of their own, so that Ray resolves ObjectRefs among them."""
    if data is None:
        return (), ()
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise TypeError("data maps names (str) to ndarrays or ObjectRefs of ndarrays")
    return tuple(data), tuple(data.values())


def run_job(job, values):
    """Runs one job, (spec, code, python, timeout, runtime_dir, want_reply,
    names) with the data's values, through this node's omnipkgd; what the
    ObjectRef of remote_exec and Node.exec resolves to.  Raises JobFailed."""
    spec, code, python, timeout, runtime_dir, want_reply, names = job
    me = node_id()
    rt = node_runtime_dir(runtime_dir, me)
    shm_in = {}
    for name, v in zip(names, values):
        if not _client._is_ndarray(v):
            raise TypeError("data[%r] is %s: data holds ndarrays (small values go in the code)"
                            % (name, type(v).__name__))
        shm_in[name] = v
    c = _client_for(rt)
    try:
        r = c.execute_shm(spec, code, shm_in, {}, python, timeout=timeout)
    except _client.DaemonConnectionError as e:
        if isinstance(e, _client.DaemonTimeout):
            reason = "timeout"          # no reply within the job's timeout and a grace
        elif isinstance(e, (_client.DaemonNotRunning, _client.DaemonStartError,
                            _client.DaemonTrustError)):
            reason = "unreachable"
        else:
            reason = "lost"
        raise JobFailed("omnipkgd of node %s (%s): %s" % (me, rt, e), reason,
                        {"error": "%s: %s" % (type(e).__name__, e), "spec": spec},
                        me) from None
    r["node_id"] = me
    r["runtime_dir"] = rt
    r["hostname"] = socket.gethostname()
    if not r.get("success"):
        raise JobFailed("%s on node %s: %s" % (r.get("reason") or "failed", me,
                                               r.get("error", "")),
                        r.get("reason"), r, me)
    return r if want_reply else r.get("job_result")


def stop_node_daemon(runtime_dir=None, wait=10.0):
    """Stops this node's omnipkgd, if one answers; returns its pid, or None
    when none was running."""
    rt = node_runtime_dir(runtime_dir)
    path = os.path.join(rt, "omnipkgd.sock")
    with _clients_lock:
        c = _clients.pop(path, None)
    if c is not None:
        c.close()
    c = _client.DaemonClient(path, auto_start=False, raise_errors=True)
    if not c.is_daemon_running():
        return None
    try:
        with open(os.path.join(rt, "omnipkgd.pid")) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    c.shutdown()
    end = time.monotonic() + wait
    while pid and time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    return pid


class _NodeActor:
    """The actor behind Node: one DaemonClient for its life."""

    def __init__(self, runtime_dir):
        self.runtime_dir = runtime_dir

    def exec(self, job, *values):
        return run_job(job[:4] + (self.runtime_dir,) + job[5:], values)

    def info(self):
        return {"node_id": node_id(), "runtime_dir": node_runtime_dir(self.runtime_dir),
                "hostname": socket.gethostname(), "pid": os.getpid()}


# The job travels as one argument (Ray pays per argument); the data's
# values each as one of their own, so that Ray resolves ObjectRefs.
def _job_task(job, *values):
    return run_job(job, values)


def _stop_task(runtime_dir):
    return node_id(), stop_node_daemon(runtime_dir)


# ---------------------------------------------------------- on the driver

_remote = {}                    # name -> the ray.remote of it, made once
_options = {}                   # placement -> remote_exec's .options() of it


def _remote_of(name):
    if name not in _remote:
        ray = _ray()
        # No retries: a job may have done its work when its node failed.
        fn = {"job": _job_task, "stop": _stop_task, "node": _NodeActor}[name]
        _remote[name] = ray.remote(fn) if name == "node" else ray.remote(max_retries=0)(fn)
    return _remote[name]


def _strategy(node_id, scheduling_strategy):
    if node_id is None:
        return scheduling_strategy
    if scheduling_strategy is not None:
        raise ValueError("give node_id or scheduling_strategy, not both")
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def remote_exec(spec, code, python=None, data=None, node_id=None, scheduling_strategy=None,
                resources=None, timeout=None, num_cpus=1, runtime_dir=None, reply=False):
    """Runs code in the (spec, python) worker of the omnipkgd of a Ray node;
    returns an ObjectRef of the job's `result` (reply=True: of the whole
    reply).  python: as the client takes it ("3.11", a path; None is the
    interpreter of the Ray worker that takes the job).  data: {name:
    ndarray or ObjectRef of one}.  node_id: that node only;
    scheduling_strategy, resources ({"name": amount}) and num_cpus: as Ray
    takes them.  timeout: the job's limit in seconds (the daemon's
    job_timeout when None).  A failure raises JobFailed from ray.get."""
    names, values = _split(data)
    # .options() costs a good part of a hot call: kept per placement given
    # by value (a strategy object is not).
    key = (num_cpus, node_id, tuple(sorted((resources or {}).items())), scheduling_strategy)
    if not isinstance(scheduling_strategy, (str, type(None))):
        key = None
    fn = _options.get(key) if key else None
    if fn is None:
        opts = {"num_cpus": num_cpus}
        strategy = _strategy(node_id, scheduling_strategy)
        if strategy is not None:
            opts["scheduling_strategy"] = strategy
        if resources:
            opts["resources"] = dict(resources)
        fn = _remote_of("job").options(**opts)
        if key:
            if len(_options) >= 256:
                _options.clear()
            _options[key] = fn
    job = (spec, code, python, timeout, runtime_dir, bool(reply), names)
    return fn.remote(job, *values)


class Node:
    """An actor on one node that keeps its connection to the node's
    omnipkgd, for many jobs (up to NODE_CONCURRENCY at once):

        n = Node(node_id=nid)
        refs = [n.exec("numpy==2.2.6", "result = float(x.sum())", data={"x": a}) for a in arrays]

    node_id, scheduling_strategy and resources place it as remote_exec's
    do; it takes num_cpus (default 0: its jobs' CPU is the daemon's
    workers').  kill() ends the actor; the daemon stays."""

    def __init__(self, node_id=None, scheduling_strategy=None, resources=None, num_cpus=0,
                 runtime_dir=None):
        opts = {"num_cpus": num_cpus, "max_concurrency": NODE_CONCURRENCY}
        strategy = _strategy(node_id, scheduling_strategy)
        if strategy is not None:
            opts["scheduling_strategy"] = strategy
        if resources:
            opts["resources"] = dict(resources)
        self.actor = _remote_of("node").options(**opts).remote(runtime_dir)

    def exec(self, spec, code, python=None, data=None, timeout=None, reply=False):
        """As remote_exec, on this actor's node: an ObjectRef."""
        names, values = _split(data)
        return self.actor.exec.remote((spec, code, python, timeout, None, bool(reply), names),
                                      *values)

    def info(self):
        """ObjectRef of {"node_id", "runtime_dir", "hostname", "pid" (the actor's)}."""
        return self.actor.info.remote()

    def kill(self):
        _ray().kill(self.actor)


def stop_daemons(runtime_dir=None, timeout=60.0):
    """Stops the omnipkgd of every alive node of the cluster (the daemons
    outlive Ray's workers, as node services do).  -> {node_id: pid of the
    daemon stopped, or None where none ran}."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    refs = [_remote_of("stop").options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                    node_id=n["NodeID"], soft=False)).remote(runtime_dir)
            for n in ray.nodes() if n.get("Alive")]
    return dict(ray.get(refs, timeout=timeout))
