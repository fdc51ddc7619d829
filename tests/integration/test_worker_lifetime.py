"""The worker runtime's life with its daemon: installed under the runtime
dir at start, removed at a clean stop; and workers die with their daemon:
a SIGKILLed omnipkgd leaves no worker running, busy ones included, whether
the worker was forked by a zygote (double-forked, re-parented to the
daemon) or exec'd by the daemon.

Each test starts its own daemon (harness.DaemonFixture) and, pass or
fail, kills every process whose command line names its runtime dir.
"""

import json
import os
import shutil
import signal
import socket
import struct
import time
import unittest

import harness

PY = harness.find_pythons(("3.11",))
WAIT = 10.0          # bound on waiting for a condition, never a timing assert


def running(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_under(rtdir):
    """Live pids whose command line names rtdir (workers, zygotes)."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if rtdir.encode() in cmd and running(int(p)):
            pids.append(int(p))
    return pids


def wait_for(cond):
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class LifetimeMixin:
    zygote = None

    def setUp(self):
        why = harness.DaemonFixture.available()
        if why:
            self.fail(why)
        if "3.11" not in PY:
            self.fail("python 3.11 not installed")
        self.d = harness.DaemonFixture(config={"zygote": self.zygote})
        self.addCleanup(self.take_down)

    def take_down(self):
        for pid in processes_under(self.d.runtime):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.d.stop()        # its complaints are expected: the daemon was killed
        shutil.rmtree(self.d.tmp, ignore_errors=True)

    def exec_json(self, code):
        r = self.d.cli("exec", "--json", "--spec", "base", "--python", "3.11", "-c", code)
        self.assertTrue(r.stdout, "no reply: rc %d, stderr %s" % (r.returncode, r.stderr))
        return json.loads(r.stdout)

    def busy_pids(self):
        w = json.loads(self.d.cli("workers", "--json").stdout)["workers"]
        return [x["pid"] for x in w if x["state"] == "busy"]

    def test_busy_worker_dies_with_daemon(self):
        self.d.start()
        rep = self.exec_json("import os; result = os.getpid()")
        self.assertTrue(rep["ok"], rep)
        self.assertEqual(rep["started_by"], "zygote" if self.zygote else "exec")
        pid = rep["result"]
        self.assertEqual(rep["worker_pid"], pid)
        # A job that never ends, on the same worker, through a raw connection
        # (the CLI could start a new daemon once this one is gone).
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.connect(self.d.socket)
        body = json.dumps({"v": 1, "id": 1, "op": "exec", "spec": "base", "python": "3.11",
                           "timeout": 300, "code": "while True: pass"}).encode()
        s.sendall(struct.pack(">I", len(body)) + body)
        self.assertTrue(wait_for(lambda: pid in self.busy_pids()), "the job never started")
        self.assertIn(pid, processes_under(self.d.runtime))

        self.d.proc.send_signal(signal.SIGKILL)
        self.d.proc.wait(WAIT)
        self.assertTrue(wait_for(lambda: not running(pid)),
                        "worker %d still running after its daemon was killed" % pid)
        self.assertTrue(wait_for(lambda: not processes_under(self.d.runtime)),
                        "left running: %s" % processes_under(self.d.runtime))


    def test_runtime_installed_and_removed(self):
        self.d.start()
        root = os.path.join(self.d.runtime, "worker")
        self.assertEqual(os.stat(root).st_mode & 0o7777, 0o700)
        rep = self.exec_json("import sys, omniworker\n"
                             "result = [sys.argv[0], omniworker.__file__, sys.path]")
        self.assertTrue(rep["ok"], rep)
        entry, pkg, path = rep["result"]
        self.assertEqual(entry, os.path.join(root, "worker.py"))
        self.assertEqual(pkg, os.path.join(root, "omniworker", "__init__.py"))
        self.assertNotIn(root, path)
        self.d.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.d.proc.wait(WAIT), 0)
        self.assertFalse(os.path.exists(root), os.listdir(self.d.runtime))


class TestZygoteForked(LifetimeMixin, unittest.TestCase):
    zygote = True


class TestExecd(LifetimeMixin, unittest.TestCase):
    zygote = False


if __name__ == "__main__":
    unittest.main()
