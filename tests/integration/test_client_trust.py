"""The clients trust only a socket that is the caller's own, and map failures
to exit codes through the reason table.

A squatter is uid 65534 ("nobody"): these tests plant, as root, the
directories and listeners another user could have made, and check that the
CLI (build/omnipkg) and the Python client refuse them, that the planted
server received zero bytes, and that no daemon was started.  The happy path
runs against the real daemon.

    python -m unittest tests/integration/test_client_trust.py
"""

import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

import harness

sys.path.insert(0, os.path.join(harness.REPO, "src", "python"))
from omnipkg import client as omc  # noqa: E402

SQUATTER = 65534
TIMEOUT = 10.0


class Planted:
    """A listener on path in a child process that counts every byte it gets.
    listen_uid: the uid the child takes after bind and before listen (the
    peer credentials a client sees).  stop() returns (connections, bytes)."""

    def __init__(self, path, listen_uid=None):
        ready_r, ready_w = os.pipe()
        self.ctl_r, self.ctl_w = os.pipe()
        self.res_r, res_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(ready_r)
                os.close(self.ctl_w)
                os.close(self.res_r)
                self._serve(path, listen_uid, ready_w, res_w)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(res_w)
        ok = os.read(ready_r, 1)
        os.close(ready_r)
        if ok != b"r":
            self.stop()
            raise RuntimeError("planted server at %s did not start" % path)

    def _serve(self, path, listen_uid, ready_w, res_w):
        signal.alarm(60)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        if listen_uid is not None:
            os.setgid(listen_uid)
            os.setuid(listen_uid)
        srv.listen(8)
        os.write(ready_w, b"r")
        conns, total, nconn = [], 0, 0
        while True:
            r, _, _ = select.select([srv, self.ctl_r] + conns, [], [])
            if self.ctl_r in r:
                break
            if srv in r:
                c, _ = srv.accept()
                conns.append(c)
                nconn += 1
            for c in [c for c in conns if c in r]:
                data = c.recv(65536)
                total += len(data)
                if not data:
                    conns.remove(c)
                    c.close()
        for c in conns:
            c.close()
        srv.close()
        os.write(res_w, json.dumps([nconn, total]).encode())

    def stop(self):
        os.write(self.ctl_w, b"s")
        out = os.read(self.res_r, 256)
        os.waitpid(self.pid, 0)
        for fd in (self.ctl_r, self.ctl_w, self.res_r):
            os.close(fd)
        return tuple(json.loads(out)) if out else (None, None)


class FakeDaemon(threading.Thread):
    """A daemon of our own uid answering each op from replies (op -> dict)."""

    def __init__(self, path, replies):
        super().__init__(daemon=True)
        self.replies = replies
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.start()

    def run(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            with c:
                while True:
                    h = c.recv(4, socket.MSG_WAITALL)
                    if len(h) < 4:
                        break
                    m = json.loads(c.recv(struct.unpack(">I", h)[0], socket.MSG_WAITALL))
                    rep = {"ok": True, "proto": 1} if m["op"] == "hello" else self.replies[m["op"]]
                    b = json.dumps(dict(rep, v=1, id=m["id"])).encode()
                    c.sendall(struct.pack(">I", len(b)) + b)

    def stop(self):
        self.srv.shutdown(socket.SHUT_RDWR)
        self.srv.close()
        self.join(TIMEOUT)


class TrustTest(unittest.TestCase):
    def setUp(self):
        why = harness.DaemonFixture.available()
        if why:
            self.fail(why)
        if os.geteuid() != 0:
            self.skipTest("planting another user's files needs root")
        self.tmp = tempfile.mkdtemp(prefix="omnipkg-trust-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.cli_bin = os.path.join(harness.build_dir(), "omnipkg")
        self.marker = os.path.join(self.tmp, "daemon-ran")
        fake_bin = os.path.join(self.tmp, "fake-omnipkgd")
        with open(fake_bin, "w") as f:
            f.write("#!/bin/sh\ntouch '%s'\nexit 0\n" % self.marker)
        os.chmod(fake_bin, 0o700)
        self.env = dict(os.environ, OMNIPKGD=fake_bin, OMNIPKG_HOME=self.tmp)
        for k in ("OMNIPKG_SOCKET", "OMNIPKG_DAEMON_CHILD"):
            self.env.pop(k, None)

    def cli(self, *args, env=None):
        return subprocess.run([self.cli_bin] + list(args), env=env or self.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=60)

    def refused_by_all(self, rundir, sock, why, listen_uid=None):
        """sock (in rundir) is refused by the CLI, with an explicit path and
        as the default path with autostart, and by the Python client; the
        planted server saw no byte and no daemon was started."""
        planted = Planted(sock, listen_uid)
        try:
            r = self.cli("--socket", sock, "status")
            self.assertEqual(r.returncode, 111, r.stderr)
            self.assertIn("refusing", r.stderr)
            self.assertIn(sock, r.stderr)
            self.assertIn(why, r.stderr)
            env = dict(self.env, OMNIPKG_RUNTIME_DIR=rundir)
            r = self.cli("exec", "--spec", "base", "-c", "print(1)", env=env)
            self.assertEqual(r.returncode, 111, r.stderr)
            self.assertIn(why, r.stderr)
            with self.assertRaises(omc.DaemonTrustError) as cm:
                omc.DaemonClient(socket_path=sock, timeout=TIMEOUT, auto_start=False,
                                 raise_errors=True).status()
            self.assertIn(sock, str(cm.exception))
            self.assertIn(why, str(cm.exception))
            # omnipkg's shape: a failed reply, nothing raised, nothing sent
            r = omc.DaemonClient(socket_path=sock, timeout=TIMEOUT).execute("base", "print(1)")
            self.assertFalse(r["success"])
            self.assertIn(why, r["error"])
            self.assertEqual(r["exception"], "DaemonTrustError")
            old = dict(os.environ)
            os.environ.update(OMNIPKGD=self.env["OMNIPKGD"], OMNIPKG_RUNTIME_DIR=rundir)
            try:
                with self.assertRaises(omc.DaemonTrustError):
                    omc.DaemonClient(timeout=TIMEOUT, auto_start=True, raise_errors=True).status()
            finally:
                os.environ.clear()
                os.environ.update(old)
        finally:
            got = planted.stop()
        self.assertEqual(got[1], 0, "the planted server received bytes")
        self.assertFalse(os.path.exists(self.marker), "a daemon was started")
        return got

    def test_squatted_0777_dir(self):
        d = os.path.join(self.tmp, "run")
        os.mkdir(d)
        os.chown(d, SQUATTER, SQUATTER)
        os.chmod(d, 0o777)
        conns, _ = self.refused_by_all(d, os.path.join(d, "omnipkgd.sock"), "mode 0777")
        self.assertEqual(conns, 0)

    def test_dir_of_another_uid(self):
        d = os.path.join(self.tmp, "run")
        os.mkdir(d, 0o700)
        os.chown(d, SQUATTER, SQUATTER)
        conns, _ = self.refused_by_all(d, os.path.join(d, "omnipkgd.sock"), "uid 65534")
        self.assertEqual(conns, 0)

    def test_symlinked_dir(self):
        theirs = os.path.join(self.tmp, "theirs")
        os.mkdir(theirs, 0o700)
        link = os.path.join(self.tmp, "run")
        os.symlink(theirs, link)
        os.lchown(link, SQUATTER, SQUATTER)
        conns, _ = self.refused_by_all(link, os.path.join(link, "omnipkgd.sock"), "symlink")
        self.assertEqual(conns, 0)

    def test_listener_of_another_uid(self):
        d = os.path.join(self.tmp, "run")
        os.mkdir(d, 0o700)
        self.refused_by_all(d, os.path.join(d, "omnipkgd.sock"), "runs as uid 65534",
                            listen_uid=SQUATTER)

    # -- exit codes and short names, from a fake daemon of our own --------

    def fake(self, replies):
        d = os.path.join(self.tmp, "own")
        os.mkdir(d, 0o700)
        path = os.path.join(d, "omnipkgd.sock")
        f = FakeDaemon(path, replies)
        self.addCleanup(f.stop)
        return path

    def test_exit_codes_follow_the_reason_table(self):
        replies = {"exec": None}
        path = self.fake(replies)
        for reason, code in (("busy", 2), ("badarg", 2), ("exception", 1), ("cancelled", 1),
                             ("spawn", 111), ("nomem", 111), ("no-such-reason", 111)):
            replies["exec"] = {"ok": False, "reason": reason, "errno": 16,
                               "error": "failed: %s" % reason}
            r = self.cli("--socket", path, "exec", "--spec", "base", "-c", "pass")
            self.assertEqual(r.returncode, code, "%s: %s" % (reason, r.stderr))

    def test_pythons_shows_the_daemons_short_name_target(self):
        # The daemon's resolver, not a rule recomputed here, says which
        # 3.11 "--python 3.11" means: here the later one from PATH.
        pys = [{"name": "3.11", "version": "3.11.7", "path": "/opt/a/python3.11",
                "tag": "cp311", "source": "pyenv", "default": True, "short_name_target": False},
               {"name": "3.11", "version": "3.11.9", "path": "/opt/b/python3.11",
                "tag": "cp311", "source": "path", "default": False, "short_name_target": True}]
        path = self.fake({"pythons": {"ok": True, "pythons": pys}})
        r = self.cli("--socket", path, "pythons")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        col = lines[0].index("SHORT")
        short = {line.split()[-1]: line[col:col + 5].strip() for line in lines if "/opt/" in line}
        self.assertEqual(short, {"/opt/a/python3.11": "", "/opt/b/python3.11": "3.11"})


class HappyPathTest(unittest.TestCase):
    def test_real_daemon_accepted_by_both_clients(self):
        why = harness.DaemonFixture.available()
        if why:
            self.fail(why)
        with harness.DaemonFixture() as d:
            r = d.cli("status", "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(r.stdout)["socket"], d.socket)
            c = omc.DaemonClient(socket_path=d.socket, timeout=60, auto_start=False)
            try:
                self.assertTrue(c.status()["success"])
            finally:
                c.close()


if __name__ == "__main__":
    unittest.main()
