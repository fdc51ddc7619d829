"""Deploying omnipkgd as a service: socket activation and readiness on the
real daemon, the units and manifest in deploy/, and `make install`.

No service manager runs here, so a small launcher plays its part the way
systemd does it: the test makes the listening socket, the launcher puts it
at fd 3, sets LISTEN_FDS=1 and LISTEN_PID to its own pid and execs
omnipkgd (which keeps that pid); NOTIFY_SOCKET names a datagram socket of
the test's.  The install tests run `cmake --install` of this build into a
temp prefix, check what lands there, have systemd-analyze verify the
units (skipped, saying so, where it is missing) and run the daemon as the
units say, as far as that can be done without systemd.

    cd tests/integration && python -m unittest -v test_deploy.py
"""

import glob
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

import harness
from test_daemon import Conn

REPO = harness.REPO
DEPLOY = os.path.join(REPO, "deploy")
PY = harness.find_pythons(("3.11",))

# Runs as the launcher: python -c LAUNCH FD LISTEN_PID LISTEN_FDS ARGV...
# (LISTEN_PID "" means this process, which exec keeps).
LAUNCH = r"""
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = sys.argv[2] or str(os.getpid())
os.environ["LISTEN_FDS"] = sys.argv[3]
os.execv(sys.argv[4], sys.argv[4:])
"""


class ServiceDaemon(harness.DaemonFixture):
    """omnipkgd started as a service manager starts it: it reports
    readiness on a datagram socket of ours (NOTIFY_SOCKET), and after
    listen() it is handed its listening socket.  start() returns when
    READY=1 arrives; stop() also wants STOPPING=1."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.notify_path = os.path.join(self.tmp, "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.messages = []
        self.listener = None

    def listen(self):
        """Makes the daemon's socket as the socket units do (0600, in the
        0700 runtime dir) and keeps it: it is handed to every start()."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            s.bind(self.socket)
        finally:
            os.umask(old)
        s.listen(64)
        self.listener = s
        self.socket_handed_over = True
        return s

    def launch(self, fd=None, listen_pid="", nfds=1, names=None, argv=None):
        """Starts omnipkgd (argv, default --foreground), handed fd when
        given, without waiting; the Popen."""
        env = dict(self.env, NOTIFY_SOCKET=self.notify_path)
        argv = list(argv or [self.daemon_bin, "--foreground"])
        pass_fds = ()
        if fd is not None:
            argv = [sys.executable, "-c", LAUNCH, str(fd), listen_pid, str(nfds)] + argv
            pass_fds = (fd,)
            if names:
                env["LISTEN_FDNAMES"] = names
        self.messages = []
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     pass_fds=pass_fds)
        return self.proc

    def start(self, timeout=60.0, fd=None, **kw):
        if self.proc is not None:
            raise RuntimeError("daemon already started")
        if fd is None and self.listener is not None:
            fd = self.listener.fileno()
        self.launch(fd=fd, **kw)
        self.wait_message("READY=1", timeout)
        return self

    def read_messages(self, timeout):
        self.notify.settimeout(timeout)
        try:
            while True:
                self.messages.append(self.notify.recv(4096).decode())
                self.notify.settimeout(0)
        except (socket.timeout, BlockingIOError):
            pass

    def wait_message(self, want, timeout):
        deadline = time.monotonic() + timeout
        while want not in self.messages:
            if self.proc.poll() is not None:
                raise RuntimeError("omnipkgd exited with %s before saying %s:\n%s"
                                   % (self.proc.returncode, want, self.log_tail()))
            if time.monotonic() > deadline:
                raise RuntimeError("omnipkgd did not say %s within %.0fs:\n%s"
                                   % (want, timeout, self.log_tail()))
            self.read_messages(0.1)

    def wait_exit(self, timeout=60.0):
        """Waits until the daemon exits on its own; its status.  The next
        start() starts another on the same runtime dir."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("omnipkgd still running after %.0fs:\n%s"
                                 % (timeout, self.log_tail()))
        self.proc = None
        self._log.close()
        self._log = None
        return status

    def stop(self, timeout=15.0):
        running = self.proc is not None
        problems = super().stop(timeout)
        if running:
            self.read_messages(0.5)
            if "STOPPING=1" not in self.messages:
                problems.insert(0, "omnipkgd never said STOPPING=1 (it said %r)" % self.messages)
        elif os.path.isdir(self.tmp):
            problems += self.reap_leftovers()
            if not problems:
                shutil.rmtree(self.tmp, ignore_errors=True)
        self.notify.close()
        if self.listener is not None:
            self.listener.close()
        return problems


def need_daemon(test, python=True):
    why = harness.DaemonFixture.available()
    if why:
        if os.environ.get("CI") == "true":
            test.fail(why)
        test.skipTest(why)
    if python and "3.11" not in PY:
        test.skipTest("python 3.11 not installed")


EXEC = {"v": 1, "op": "exec", "spec": "base", "python": "3.11"}


class TestSocketActivation(unittest.TestCase):
    def setUp(self):
        need_daemon(self)
        self.d = ServiceDaemon()

    def tearDown(self):
        self.assertEqual(self.d.stop(), [])

    def log(self):
        with open(self.d.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def test_connection_made_before_the_daemon_is_served(self):
        self.d.listen()
        c = Conn(self.d.socket, timeout=120)          # waits in the backlog: nothing runs yet
        c.send(dict(EXEC, id=7, code="result = 1 + 1"))
        self.d.start(names="omnipkgd.socket")
        r = c.recv()
        c.close()
        self.assertEqual((r["id"], r["ok"], r.get("result")), (7, True, 2), r)
        self.assertIn("handed over as omnipkgd.socket", self.log())
        # The CLI finds it where it always looks, and trusts it.
        r = self.d.cli("exec", "--json", "--spec", "base", "--python", "3.11",
                       "-c", "result = 2 + 2")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["result"], 4)

    def test_socket_outlives_the_daemon(self):
        self.d.listen()
        self.d.start()
        r = self.d.cli("daemon", "stop")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.d.wait_exit(), 0, self.d.log_tail())
        self.d.read_messages(0.5)
        self.assertIn("STOPPING=1", self.d.messages)
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.d.socket).st_mode),
                        "the daemon removed the socket it was handed")
        # A client that comes while no daemon runs waits for the next one.
        c = Conn(self.d.socket, timeout=120)
        c.send(dict(EXEC, id=1, code="result = 'second'"))
        self.d.start()
        r = c.recv()
        c.close()
        self.assertEqual(r.get("result"), "second", r)

    def test_workers_inherit_neither_variables_nor_socket(self):
        lst = self.d.listen()
        self.d.start()
        mark = "socket:[%d]" % os.fstat(lst.fileno()).st_ino
        code = ("import os\n"
                "def _fds():\n"
                "    out = []\n"
                "    for f in os.listdir('/proc/self/fd'):\n"
                "        try:\n"
                "            out.append(os.readlink('/proc/self/fd/' + f))\n"
                "        except OSError:\n"
                "            pass\n"
                "    return out\n"
                "result = {'env': sorted(k for k in os.environ\n"
                "                        if k.startswith('LISTEN_') or k == 'NOTIFY_SOCKET'),\n"
                "          'fds': _fds()}\n")
        r = self.d.cli("exec", "--json", "--spec", "base", "--python", "3.11", "-c", code)
        self.assertEqual(r.returncode, 0, r.stderr)
        res = json.loads(r.stdout)["result"]
        self.assertEqual(res["env"], [])
        daemon_fds = [os.readlink("/proc/%d/fd/%s" % (self.d.proc.pid, f))
                      for f in os.listdir("/proc/%d/fd" % self.d.proc.pid)]
        self.assertIn(mark, daemon_fds, "the daemon does not hold the socket it was handed")
        self.assertNotIn(mark, res["fds"], "a worker inherited the listening socket")

    def test_variables_for_another_process_are_ignored(self):
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(os.path.join(self.d.tmp, "other.sock"))
        other.listen(4)
        try:
            self.d.start(fd=other.fileno(), listen_pid="1")
            self.assertTrue(stat.S_ISSOCK(os.lstat(self.d.socket).st_mode),
                            "the daemon did not bind its own socket")
            r = self.d.cli("exec", "--json", "--spec", "base", "--python", "3.11", "-c",
                           "import os\nresult = sorted(k for k in os.environ "
                           "if k.startswith('LISTEN_'))")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(r.stdout)["result"], [])
        finally:
            other.close()
        # Its own socket is its own to remove: stop() checks that it did.

    def test_ready_means_accepting(self):
        self.d.start()                   # binds its own socket; returns on READY=1
        c = Conn(self.d.socket, timeout=120)
        c.send({"v": 1, "id": 3, "op": "hello"})
        self.assertEqual(c.recv()["id"], 3)
        c.close()


class TestBadHandover(unittest.TestCase):
    """A descriptor the daemon cannot serve: exit 100 at once, saying
    why, never a daemon that hangs or binds a socket of its own."""

    def setUp(self):
        need_daemon(self, python=False)
        self.d = ServiceDaemon()
        self.closing = []

    def tearDown(self):
        for s in self.closing:
            s.close()
        self.assertEqual(self.d.stop(), [])

    def refused(self, fd, want, nfds=1):
        t0 = time.monotonic()
        self.d.launch(fd=fd, nfds=nfds)
        status = self.d.wait_exit(timeout=30)
        took = time.monotonic() - t0
        with open(self.d.log_path, encoding="utf-8", errors="replace") as f:
            log = f.read()
        self.assertEqual(status, 100, log)
        self.assertIn("omnipkgd: socket activation: ", log)
        self.assertIn(want, log)
        self.assertNotIn("listening on", log)
        self.assertFalse([m for m in harness.SANITIZER_MARKS if m in log], log)
        self.d.read_messages(0.05)
        self.assertEqual(self.d.messages, [], "it said it was ready")
        self.assertLess(took, 10, "slow to refuse")
        os.truncate(self.d.log_path, 0)
        return log

    def sock(self, *args):
        s = socket.socket(*args)
        self.closing.append(s)
        return s

    def test_regular_file(self):
        with open(os.path.join(self.d.tmp, "file"), "w") as f:
            self.refused(f.fileno(), "fd 3 (LISTEN_FDS) is not a socket")
        self.assertFalse(os.path.exists(self.d.socket))

    def test_udp_socket(self):
        s = self.sock(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        self.refused(s.fileno(), "is not a Unix socket")
        self.assertFalse(os.path.exists(self.d.socket))

    def test_not_listening(self):
        s = self.sock(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.d.socket)
        self.refused(s.fileno(), "is not listening")
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.d.socket).st_mode), "not the daemon's")
        os.unlink(self.d.socket)

    def test_listening_elsewhere(self):
        other = os.path.join(self.d.tmp, "other.sock")
        s = self.sock(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(other)
        s.listen(4)
        log = self.refused(s.fileno(), "listens on %s" % other)
        self.assertIn(self.d.socket, log)
        self.assertFalse(os.path.exists(self.d.socket))

    def test_more_than_one(self):
        s = self.sock(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.d.socket)
        s.listen(4)
        self.refused(s.fileno(), "LISTEN_FDS=2: omnipkgd serves one socket", nfds=2)
        os.unlink(self.d.socket)


# -- the units and the manifest ----------------------------------------------

def unit_file(path):
    """{section: [(key, value), ...]} of a systemd unit file."""
    out, sec = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                sec = out.setdefault(line[1:-1], [])
                continue
            k, v = line.split("=", 1)
            sec.append((k.strip(), v.strip()))
    return out


def unit_value(u, section, key):
    """The last value of key, as systemd takes it; None when absent."""
    vals = [v for k, v in u.get(section, []) if k == key]
    return vals[-1] if vals else None


def unit_env(u):
    return dict(v.split("=", 1) for k, v in u["Service"] if k == "Environment")


class TestUnits(unittest.TestCase):
    """The units agree with each other and with the daemon's own rules."""

    def units(self, kind):
        d = os.path.join(DEPLOY, "systemd", kind)
        return unit_file(os.path.join(d, "omnipkgd.service.in")), \
            unit_file(os.path.join(d, "omnipkgd.socket"))

    def check_common(self, svc, sock, runtime):
        self.assertEqual(unit_value(sock, "Socket", "ListenStream"), runtime + "/omnipkgd.sock")
        self.assertEqual(unit_env(svc)["OMNIPKG_RUNTIME_DIR"], runtime)
        self.assertEqual(unit_value(sock, "Socket", "SocketMode"), "0600")
        self.assertEqual(unit_value(sock, "Socket", "DirectoryMode"), "0700")
        self.assertEqual(unit_value(svc, "Service", "Type"), "notify")
        argv = shlex.split(unit_value(svc, "Service", "ExecStart"))
        self.assertEqual(argv, ["@OMNI_BINDIR@/omnipkgd", "--foreground"])
        self.assertEqual(unit_value(svc, "Service", "RestartPreventExitStatus"), "100")
        self.assertEqual(unit_value(svc, "Service", "Delegate"), "yes")
        self.assertEqual(unit_value(svc, "Unit", "Requires"), "omnipkgd.socket")
        self.assertEqual(unit_value(svc, "Install", "Also"), "omnipkgd.socket")

    def test_system_units(self):
        svc, sock = self.units("system")
        self.check_common(svc, sock, "/run/omnipkg")
        # Root's: systemd (root) sets the socket listening, and a client's
        # SO_PEERCRED names it, so the daemon must be root too.
        for k in ("User", "DynamicUser"):
            self.assertIsNone(unit_value(svc, "Service", k))
        self.assertIsNone(unit_value(sock, "Socket", "SocketUser"))
        # Its mounts must reach clients: no mount namespace of its own.
        for k in ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
                  "PrivateMounts", "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths",
                  "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                  "ProtectControlGroups", "RuntimeDirectory", "StateDirectory",
                  "TemporaryFileSystem", "BindPaths", "MountFlags"):
            self.assertIsNone(unit_value(svc, "Service", k), k)
        self.assertIn("CAP_SYS_ADMIN", unit_value(svc, "Service", "CapabilityBoundingSet").split())

    def test_user_units(self):
        svc, sock = self.units("user")
        self.check_common(svc, sock, "%t/omnipkg")
        self.assertIsNone(unit_value(svc, "Service", "User"))


def load_yaml_docs(path):
    """The documents of a YAML file: with PyYAML, else through a python3
    that has it (Debian: python3-yaml)."""
    try:
        import yaml
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except ImportError:
        pass
    for py in ("/usr/bin/python3", shutil.which("python3")):
        if not py:
            continue
        r = subprocess.run([py, "-c", "import json, sys, yaml\n"
                            "print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))"],
                           stdin=open(path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True)
        if r.returncode == 0:
            return json.loads(r.stdout)
    raise AssertionError("no PyYAML to read %s (apt-get install python3-yaml, or pip install "
                         "pyyaml into %s)" % (path, sys.executable))


def project_version():
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        return re.search(r"project\(omnipkgd VERSION ([0-9.]+)", f.read()).group(1)


class TestKubernetes(unittest.TestCase):
    """deploy/k8s/omnipkgd-daemonset.yaml: one daemon per node whose
    socket, segments and control filesystem reach the node's pods."""

    @classmethod
    def setUpClass(cls):
        cls.path = os.path.join(DEPLOY, "k8s", "omnipkgd-daemonset.yaml")
        docs = load_yaml_docs(cls.path)
        cls.kinds = {d["kind"]: d for d in docs}
        cls.ds = cls.kinds["DaemonSet"]
        cls.pod = cls.ds["spec"]["template"]["spec"]
        cls.ctr = cls.pod["containers"][0]
        cls.consumer = cls.kinds["Pod"]["spec"]

    def mount_of(self, pod, ctr, host_path):
        """(volumeMount, volume) of the hostPath volume host_path in ctr."""
        vols = {v["name"]: v for v in pod["volumes"]}
        for m in ctr["volumeMounts"]:
            v = vols[m["name"]]
            if v.get("hostPath", {}).get("path") == host_path:
                return m, v
        self.fail("%s does not mount hostPath %s" % (ctr["name"], host_path))

    def env(self, ctr):
        return {e["name"]: e.get("value") for e in ctr.get("env", [])}

    def test_documents(self):
        self.assertEqual(sorted(self.kinds), ["DaemonSet", "Pod"])
        sel = self.ds["spec"]["selector"]["matchLabels"]
        self.assertLessEqual(sel.items(), self.ds["spec"]["template"]["metadata"]["labels"].items())

    def test_daemon_container(self):
        m, v = self.mount_of(self.pod, self.ctr, "/run/omnipkg")
        self.assertEqual(v["hostPath"]["type"], "DirectoryOrCreate")
        self.assertEqual(m["mountPropagation"], "Bidirectional")
        self.assertIs(self.ctr["securityContext"]["privileged"], True)
        self.assertNotEqual(self.pod.get("hostUsers"), False)
        fm, fv = self.mount_of(self.pod, self.ctr, "/dev/fuse")
        self.assertEqual((fv["hostPath"]["type"], fm["mountPath"]), ("CharDevice", "/dev/fuse"))
        # The runtime dir is made by the daemon (0700) below the shared
        # directory, which the kubelet makes 0755; the mount point too.
        rt = self.env(self.ctr)["OMNIPKG_RUNTIME_DIR"]
        self.assertTrue(rt.startswith(m["mountPath"] + "/"), rt)
        cmd = " ".join(self.ctr.get("command", []) + self.ctr.get("args", []))
        mnt = re.search(r"--mount (\S+)", cmd).group(1)
        self.assertTrue(mnt.startswith(m["mountPath"] + "/"), mnt)
        self.assertIn("mkdir -p " + mnt, cmd)
        self.assertIn("--foreground", cmd)
        for k in ("requests", "limits"):
            self.assertIn("memory", self.ctr["resources"][k])
            self.assertIn("cpu", self.ctr["resources"][k])

    def test_liveness_probe_uses_the_cli(self):
        probe = self.ctr["livenessProbe"]["exec"]["command"]
        self.assertEqual(probe, ["omnipkg", "daemon", "status"])
        # The probe fails when no daemon answers, and starts none.
        need_daemon(self, python=False)
        rt = tempfile.mkdtemp(prefix="omnipkg-probe-")
        try:
            env = dict(os.environ, OMNIPKG_RUNTIME_DIR=rt)
            env.pop("OMNIPKG_SOCKET", None)
            r = subprocess.run([os.path.join(harness.build_dir(), "omnipkg")] + probe[1:],
                               env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=60)
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertEqual(os.listdir(rt), [], "the probe started a daemon")
        finally:
            shutil.rmtree(rt, ignore_errors=True)

    def test_image_placeholder(self):
        image = self.ctr["image"]
        self.assertEqual(image, "REGISTRY/omnipkgd:" + project_version())
        with open(os.path.join(REPO, "README.md")) as f:
            self.assertTrue("REGISTRY/omnipkgd" in f.read(), "README does not say what to put there")

    def test_consumer_pod(self):
        ctr = self.consumer["containers"][0]
        m, _ = self.mount_of(self.consumer, ctr, "/run/omnipkg")
        dm, _ = self.mount_of(self.pod, self.ctr, "/run/omnipkg")
        self.assertEqual(m["mountPropagation"], "HostToContainer")
        # Segment and mount paths are the daemon's own: the same place in both.
        self.assertEqual(m["mountPath"], dm["mountPath"])
        self.assertEqual(self.env(ctr)["OMNIPKG_RUNTIME_DIR"],
                         self.env(self.ctr)["OMNIPKG_RUNTIME_DIR"])
        self.assertFalse(ctr.get("securityContext", {}).get("privileged", False))
        # Only the daemon's own uid gets in (SO_PEERCRED, socket owner).
        uid = lambda pod, c: c.get("securityContext", {}).get(
            "runAsUser", pod.get("securityContext", {}).get("runAsUser"))
        self.assertEqual(uid(self.consumer, ctr), uid(self.pod, self.ctr))
        self.assertIsNotNone(uid(self.consumer, ctr))


# -- make install ------------------------------------------------------------

def cmake_cache(build):
    out = {}
    with open(os.path.join(build, "CMakeCache.txt")) as f:
        for line in f:
            m = re.match(r"([A-Za-z_0-9]+):[A-Z]+=(.*)$", line.rstrip("\n"))
            if m:
                out[m.group(1)] = m.group(2)
    return out


def cmake_install(build, prefix, destdir=None):
    env = dict(os.environ)
    env.pop("DESTDIR", None)
    if destdir:
        env["DESTDIR"] = destdir
    r = subprocess.run(["cmake", "--install", build, "--prefix", prefix], env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError("cmake --install failed (%d):\n%s" % (r.returncode, r.stdout))


class TestInstall(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.build = harness.build_dir()
        why = harness.DaemonFixture.available(cls.build)
        if why:
            if os.environ.get("CI") == "true":
                raise AssertionError(why)
            raise unittest.SkipTest(why)
        cls.cache = cmake_cache(cls.build)
        cls.tmp = tempfile.mkdtemp(prefix="omnipkg-install-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        cmake_install(cls.build, cls.prefix)
        found = glob.glob(os.path.join(cls.prefix, "lib", "**", "omnipkg", "__init__.py"),
                          recursive=True)
        cls.site = os.path.dirname(os.path.dirname(found[0])) if len(found) == 1 else None
        cls.found = found

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def read(self, *parts):
        with open(os.path.join(*parts)) as f:
            return f.read()

    def test_binaries_and_units(self):
        for b in ("omnipkgd", "omnipkg"):
            self.assertTrue(os.access(os.path.join(self.prefix, "bin", b), os.X_OK), b)
        for kind in ("system", "user"):
            d = os.path.join(self.prefix, "lib", "systemd", kind)
            svc = self.read(d, "omnipkgd.service")
            self.assertIn("\nExecStart=%s/bin/omnipkgd --foreground\n" % self.prefix, svc)
            self.assertIsNone(re.search(r"@[A-Z_]+@", svc), svc)
            self.assertEqual(self.read(d, "omnipkgd.socket"),
                             self.read(DEPLOY, "systemd", kind, "omnipkgd.socket"))

    def test_destdir_is_not_in_the_units(self):
        dest = os.path.join(self.tmp, "destdir")
        cmake_install(self.build, "/opt/omnipkg-test", destdir=dest)
        svc = self.read(dest, "opt/omnipkg-test/lib/systemd/system/omnipkgd.service")
        self.assertIn("\nExecStart=/opt/omnipkg-test/bin/omnipkgd --foreground\n", svc)
        self.assertFalse(os.path.exists("/opt/omnipkg-test"))

    def importable(self, python):
        env = dict(os.environ, PYTHONPATH=self.site)
        code = ("import omnipkg.client, omnipkg.isolation.worker_daemon\n"
                "print(omnipkg.client.__file__)\n")
        if os.path.exists(os.path.join(self.site, "omnipkg_atomic.abi3.so")):
            code += "from omnipkg import atomics\nprint(atomics.load().__file__)\n"
        r = subprocess.run([python, "-c", code], env=env, cwd="/", stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        for line in r.stdout.split():
            self.assertTrue(line.startswith(self.site + "/"), (line, self.site))

    def test_python_client_importable(self):
        self.assertIsNotNone(self.site, "omnipkg/__init__.py installed %d times: %s"
                             % (len(self.found), self.found))
        want = self.cache.get("OMNI_PYTHON_SITEDIR")
        if want:
            self.assertEqual(self.site, want if os.path.isabs(want)
                             else os.path.join(self.prefix, want))
        if os.path.exists(os.path.join(self.build, "omnipkg_atomic.abi3.so")):
            self.assertTrue(os.path.exists(os.path.join(self.site, "omnipkg_atomic.abi3.so")))
        self.importable(sys.executable)
        py = self.cache.get("OMNI_PYTHON", "")
        if os.access(py, os.X_OK):
            self.importable(py)

    def test_site_dir_is_where_python3_looks(self):
        """With the configured prefix, the client lands on OMNI_PYTHON's sys.path."""
        if self.cache.get("OMNI_PYTHON_SITEDIR"):
            self.skipTest("OMNI_PYTHON_SITEDIR given: installed where asked")
        py = self.cache.get("OMNI_PYTHON", "")
        if not os.access(py, os.X_OK):
            self.skipTest("no python3 found at configure time (OMNI_PYTHON)")
        self.assertIsNotNone(self.site)
        rel = os.path.relpath(self.site, self.prefix)
        want = os.path.join(self.cache["CMAKE_INSTALL_PREFIX"], rel)
        r = subprocess.run([py, "-E", "-c", "import json, sys; print(json.dumps(sys.path))"],
                           stdout=subprocess.PIPE, text=True, timeout=60)
        self.assertIn(want, json.loads(r.stdout),
                      "make install puts the client where %s does not look; set "
                      "OMNI_PYTHON_SITEDIR" % py)

    def verify(self, kind, *opts, env=None):
        tool = shutil.which("systemd-analyze")
        if not tool:
            self.skipTest("systemd-analyze not found: the %s units are not verified" % kind)
        d = os.path.join(self.prefix, "lib", "systemd", kind)
        r = subprocess.run([tool] + list(opts) + ["verify", os.path.join(d, "omnipkgd.socket"),
                                                   os.path.join(d, "omnipkgd.service")],
                           env=env, cwd=d, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=120)
        # verify exits 0 on unknown keys and bad values, but says so.
        self.assertEqual((r.returncode, r.stdout), (0, ""))

    def test_system_units_verify(self):
        self.verify("system")

    def test_user_units_verify(self):
        rt = os.path.join(self.tmp, "xdg-runtime")
        os.makedirs(rt, mode=0o700, exist_ok=True)
        self.verify("user", "--user", env=dict(os.environ, XDG_RUNTIME_DIR=rt))

    def play(self, kind, hardened=False):
        """Runs the installed units of kind as systemd would, as far as can
        be without it: the socket where ListenStream= says (made as
        SocketMode= and DirectoryMode= say), omnipkgd as ExecStart= and
        Environment= say, with %t, /run/ and /var/lib/ moved into a temp
        dir; hardened: under the unit's CapabilityBoundingSet= and
        NoNewPrivileges= too (setpriv).  Runs a job and makes a segment;
        returns what `omnipkg status` says of containment and the quota."""
        d = os.path.join(self.prefix, "lib", "systemd", kind)
        svc = unit_file(os.path.join(d, "omnipkgd.service"))
        sock = unit_file(os.path.join(d, "omnipkgd.socket"))
        daemon = ServiceDaemon(build=os.path.join(self.prefix, "bin"))
        # The installed CLI would need LD_LIBRARY_PATH; the build's is the same.
        daemon.cli_bin = os.path.join(self.build, "omnipkg")
        t = daemon.tmp

        def place(v):
            for real in ("/run/", "/var/lib/"):
                if v.startswith(real):
                    return t + v
            return v.replace("%t", t)

        daemon.socket = place(unit_value(sock, "Socket", "ListenStream"))
        daemon.runtime = os.path.dirname(daemon.socket)
        os.makedirs(daemon.runtime, exist_ok=True)
        os.chmod(daemon.runtime, int(unit_value(sock, "Socket", "DirectoryMode"), 8))
        for k in ("OMNIPKG_RUNTIME_DIR", "OMNIPKG_HOME"):
            daemon.env.pop(k, None)
        daemon.env.update({k: place(v) for k, v in unit_env(svc).items()})
        argv = shlex.split(unit_value(svc, "Service", "ExecStart"))
        if hardened:
            caps = unit_value(svc, "Service", "CapabilityBoundingSet").split()
            wrap = [shutil.which("setpriv"), "--inh-caps=-all", "--ambient-caps=-all",
                    "--bounding-set=-all," + ",".join("+" + c[4:].lower() for c in caps)]
            if unit_value(svc, "Service", "NoNewPrivileges") == "yes":
                wrap.append("--no-new-privs")
            argv = wrap + argv
        try:
            daemon.listen()
            os.chmod(daemon.socket, int(unit_value(sock, "Socket", "SocketMode"), 8))
            daemon.start(argv=argv)
            r = daemon.cli("exec", "--json", "--spec", "base", "--python", "3.11",
                           "-c", "result = 6 * 7")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(r.stdout)["result"], 42)
            r = daemon.cli("shm", "create", "frame", "1M")
            self.assertEqual(r.returncode, 0, r.stderr)
            r = daemon.cli("status", "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            st = json.loads(r.stdout)
            return {"containment": st["containment"], "memory_limit": st["memory_limit"],
                    "quota_enforced_by_kernel": st["shm"]["quota_enforced_by_kernel"]}
        finally:
            problems = daemon.stop()
            self.assertEqual(problems, [])

    def test_user_units_run_as_systemd_runs_them(self):
        need_daemon(self)
        self.play("user")

    def test_system_units_hardening_takes_nothing_away(self):
        """Under the system unit's hardening, the daemon still has what it
        has without it: cgroups, the segments' own tmpfs."""
        need_daemon(self)
        if os.geteuid() != 0:
            self.skipTest("the system units run omnipkgd as root")
        if not shutil.which("setpriv"):
            self.skipTest("setpriv not found: the system unit's hardening is not tried")
        self.assertEqual(self.play("system", hardened=True), self.play("system"))


if __name__ == "__main__":
    unittest.main()
