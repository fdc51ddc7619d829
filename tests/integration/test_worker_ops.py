"""Worker control through the real daemon: exec's pin and max_memory_mb,
the evict and idle_config ops, and what the workers op says of them
(pinned, max_memory_mb, last_used), over raw frames and through the CLI.

Memory limits are checked both ways the daemon has: its default (a cgroup's
memory.max where the memory controller reaches the workers' groups, else
RLIMIT_AS, as status "memory_limit" says) and the /proc fallback forced by
the config ("cgroups": false), which always uses RLIMIT_AS.

    python -m unittest tests/integration/test_worker_ops.py
"""

import json
import os
import signal
import time
import unittest

import harness
import test_daemon as td

PY = td.PY
LIMIT_MB = 64
BIG = "b = bytearray(256 << 20)"          # four times the limit


class OpsTest(td.DaemonTest):
    def setUp(self):
        super().setUp()
        self.d.start()
        self.c = td.Conn(self.d.socket)
        self.addCleanup(self.c.close)
        self.next_id = 0

    def call(self, op, conn=None, **args):
        conn = conn or self.c
        self.next_id += 1
        conn.send(dict(args, v=1, id=self.next_id, op=op))
        rep = conn.recv()
        self.assertEqual(rep["id"], self.next_id)
        return rep

    def run_code(self, code, tag="", **args):
        args.setdefault("python", "3.11")
        return self.call("exec", spec=args.pop("spec", "base"), code=code, tag=tag, **args)

    def pid_of(self, tag="", **args):
        rep = self.run_code("import os; result = os.getpid()", tag, **args)
        self.assertTrue(rep["ok"], rep)
        return rep["result"]

    def workers(self):
        return self.call("workers")["workers"]

    def worker(self, pid):
        return next((w for w in self.workers() if w["pid"] == pid), None)

    def status(self):
        return self.call("status")


class TestEvict(OpsTest):
    def test_evict_idle_worker(self):
        pid = self.pid_of("e")
        rep = self.call("evict", spec="base", python="3.11", tag="e")
        self.assertEqual(rep, dict(rep, ok=True, evicted=[pid]))
        self.assertIsNone(self.worker(pid))
        td.wait_until(self, "worker %d to exit" % pid, lambda: td.pid_gone(pid))
        self.assertNotEqual(self.pid_of("e"), pid)

    def test_evict_during_a_job(self):
        started, release, code = td.gate(self)
        other = td.Conn(self.d.socket)
        self.addCleanup(other.close)
        other.send({"v": 1, "id": 1, "op": "exec", "spec": "base", "python": "3.11",
                    "code": code + "import os\nresult = os.getpid()\n"})
        td.wait_until(self, "the job to start", lambda: os.path.exists(started))
        with open(started) as f:
            pid = int(f.read())
        rep = self.call("evict", spec="base", python="3.11")
        self.assertTrue(rep["ok"], rep)
        self.assertEqual(rep["evicted"], [pid])
        self.assertFalse(td.pid_gone(pid), "a busy worker is stopped only after its job")
        open(release, "w").close()
        job = other.recv()
        self.assertTrue(job["ok"], job)
        self.assertEqual(job["result"], pid)
        td.wait_until(self, "worker %d to exit" % pid, lambda: td.pid_gone(pid))
        self.assertIsNone(self.worker(pid))
        self.assertNotEqual(self.pid_of(), pid)

    def test_queued_jobs_get_a_new_worker(self):
        started, release, code = td.gate(self)
        other = td.Conn(self.d.socket)
        self.addCleanup(other.close)
        other.send({"v": 1, "id": 1, "op": "exec", "spec": "base", "python": "3.11",
                    "code": code + "import os\nresult = os.getpid()\n"})
        td.wait_until(self, "the job to start", lambda: os.path.exists(started))
        other.send({"v": 1, "id": 2, "op": "exec", "spec": "base", "python": "3.11",
                    "code": "import os\nresult = os.getpid()\n"})
        time.sleep(0.2)         # the second is queued behind the first
        rep = self.call("evict", spec="base", python="3.11")
        open(release, "w").close()
        first, second = sorted((other.recv(), other.recv()), key=lambda r: r["id"])
        self.assertTrue(first["ok"] and second["ok"], (first, second))
        self.assertEqual(rep["evicted"], [first["result"]])
        self.assertNotEqual(second["result"], first["result"])

    def test_evict_nothing(self):
        self.pid_of("e")
        for args in ({"spec": "base", "python": "3.11", "tag": "other"},
                     {"spec": "base", "python": "3.11"},
                     {"spec": "base", "python": "3.99", "tag": "e"},
                     {"spec": "base", "python": "/nonexistent/bin/python3", "tag": "e"},
                     {"spec": "numpy==1.26.4", "python": "3.11", "tag": "e"}):
            rep = self.call("evict", **args)
            self.assertEqual((rep["ok"], rep["evicted"]), (True, []), args)
        self.assertEqual(len(self.workers()), 1)

    def test_evict_refusals(self):
        rep = self.call("evict", spec="numpy===1")
        self.assertEqual(rep["reason"], "badspec", rep)
        rep = self.call("evict")
        self.assertEqual(rep["reason"], "badarg", rep)
        self.assertIn('"spec"', rep["error"])
        rep = self.call("evict", spec="base", code="1")
        self.assertEqual(rep["reason"], "badarg", rep)
        self.assertIn('"code"', rep["error"])

    def test_spec_canonicalised_as_exec(self):
        td.link_bubble(self, self.d, "3.11", "numpy", "1.26.4")
        pid = self.pid_of(spec="numpy==1.26.4")
        rep = self.call("evict", spec="NumPy==1.26.4", python="3.11")
        self.assertEqual(rep.get("evicted"), [pid], rep)

    def test_cli(self):
        pid = self.pid_of("cli")
        r = self.d.cli("evict", "--spec", "base", "--python", "3.11", "--tag", "cli")
        self.assertEqual((r.returncode, r.stdout), (0, "%d\n" % pid), r.stderr)
        r = self.d.cli("evict", "--spec", "base", "--python", "3.11", "--tag", "cli")
        self.assertEqual((r.returncode, r.stdout), (0, ""), r.stderr)
        r = self.d.cli("evict", "--spec", "numpy===1")
        self.assertEqual(r.returncode, 2, r.stderr)
        r = self.d.cli("evict", "--python", "3.11")
        self.assertEqual(r.returncode, 100, r.stderr)


class TestPin(OpsTest):
    config = {"idle_timeout": 1}

    def test_pinned_worker_outlives_the_idle_timeout(self):
        pinned = self.pid_of("p", pin=True)
        plain = self.pid_of("u")
        td.wait_until(self, "the unpinned worker to be stopped", lambda: self.worker(plain) is None)
        td.wait_until(self, "worker %d to exit" % plain, lambda: td.pid_gone(plain))
        time.sleep(2.5)          # more idle checks, a second apart
        w = self.worker(pinned)
        self.assertIsNotNone(w, "the pinned worker was stopped for idleness")
        self.assertTrue(w["pinned"])
        self.assertGreater(w["idle_s"], 1.0)
        # A later exec without pin leaves it pinned.
        self.assertEqual(self.pid_of("p"), pinned)
        self.assertTrue(self.worker(pinned)["pinned"])
        # Evict stops it all the same.
        self.assertEqual(self.call("evict", spec="base", python="3.11", tag="p")["evicted"],
                         [pinned])
        td.wait_until(self, "worker %d to exit" % pinned, lambda: td.pid_gone(pinned))

    def test_pin_refusals(self):
        rep = self.run_code("pass", pin=1)
        self.assertEqual(rep["reason"], "badarg", rep)
        self.assertIn('"pin"', rep["error"])

    def test_cli_pin(self):
        r = self.d.cli("exec", "--spec", "base", "--python", "3.11", "--tag", "cp", "--pin",
                       "--json", "-c", "import os; result = os.getpid()")
        self.assertEqual(r.returncode, 0, r.stderr)
        pid = json.loads(r.stdout)["result"]
        self.assertTrue(self.worker(pid)["pinned"])
        r = self.d.cli("workers")
        self.assertIn("pinned", r.stdout)


class TestWorkersOp(OpsTest):
    def test_pinned_max_memory_last_used(self):
        before = time.time()
        a = self.pid_of("a")
        b = self.pid_of("b", pin=True, max_memory_mb=LIMIT_MB)
        after = time.time()
        wa, wb = self.worker(a), self.worker(b)
        for w in (wa, wb):
            for key, kind in (("pinned", bool), ("max_memory_mb", (int, float)),
                              ("last_used", float)):
                self.assertIsInstance(w[key], kind, (key, w))
            self.assertTrue(before <= w["last_used"] <= after, (before, w, after))
        self.assertEqual((wa["pinned"], wa["max_memory_mb"]), (False, 0))
        self.assertEqual((wb["pinned"], wb["max_memory_mb"]), (True, LIMIT_MB))
        self.assertLessEqual(wa["last_used"], wb["last_used"])
        time.sleep(0.3)
        self.pid_of("a")
        self.assertGreater(self.worker(a)["last_used"], wa["last_used"] + 0.2)


class MemoryMixin:
    """The limit, where status says how the daemon enforces it."""

    def mechanism(self):
        st = self.status()
        self.assertIn(st["memory_limit"], ("cgroup", "rlimit"))
        return st["memory_limit"]

    def test_job_over_the_limit_fails_with_reason_memory(self):
        how = self.mechanism()
        pid = self.pid_of("m", max_memory_mb=LIMIT_MB)
        rep = self.run_code(BIG, "m", max_memory_mb=LIMIT_MB)
        self.assertFalse(rep["ok"], rep)
        self.assertEqual(rep["reason"], "memory", rep)
        self.assertIn("%d MiB" % LIMIT_MB, rep["error"])
        self.assertEqual(self.status()["ok"], True)      # the daemon still answers
        after = self.pid_of("m")
        if how == "cgroup":
            # Killed by the kernel: the next job gets a new worker.
            self.assertNotEqual(after, pid)
            td.wait_until(self, "worker %d to be gone" % pid, lambda: td.pid_gone(pid))
        else:
            # The allocation failed (MemoryError): the worker goes on.
            self.assertEqual(after, pid)
            self.assertEqual(self.worker(pid)["max_memory_mb"], LIMIT_MB)
        # The limit stays for the worker's life.
        rep = self.run_code(BIG, "m", max_memory_mb=LIMIT_MB)
        self.assertEqual(rep["reason"], "memory", rep)

    def test_job_under_the_limit_succeeds(self):
        self.mechanism()
        rep = self.run_code("b = bytearray(16 << 20); result = len(b)", "u",
                            max_memory_mb=LIMIT_MB)
        self.assertTrue(rep["ok"], rep)
        self.assertEqual(rep["result"], 16 << 20)

    def test_a_new_value_changes_the_limit(self):
        self.mechanism()
        rep = self.run_code(BIG, "c", max_memory_mb=LIMIT_MB)
        self.assertEqual(rep["reason"], "memory", rep)
        rep = self.run_code(BIG + "; result = len(b)", "c", max_memory_mb=1024)
        self.assertTrue(rep["ok"], rep)
        self.assertEqual(self.worker(rep["worker_pid"])["max_memory_mb"], 1024)

    def test_memory_refusals(self):
        for bad in (0, -1, 1048577, "64"):
            rep = self.run_code("pass", max_memory_mb=bad)
            self.assertEqual(rep["reason"], "badarg", (bad, rep))
            self.assertIn('"max_memory_mb"', rep["error"])
        self.assertEqual(self.workers(), [])

    def test_cli_exit_code(self):
        self.mechanism()
        r = self.d.cli("exec", "--spec", "base", "--python", "3.11", "--tag", "x",
                       "--max-memory-mb", LIMIT_MB, "-c", BIG)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("memory", r.stderr)
        r = self.d.cli("exec", "--spec", "base", "--python", "3.11", "--max-memory-mb", "x",
                       "-c", "pass")
        self.assertEqual(r.returncode, 100, r.stderr)


class TestMemoryDefault(MemoryMixin, OpsTest):
    """Whatever this machine gives the daemon."""


class TestMemoryProcFallback(MemoryMixin, OpsTest):
    """No cgroups at all: the /proc fallback and RLIMIT_AS."""
    config = {"cgroups": False}

    def test_fallback_is_in_force(self):
        st = self.status()
        self.assertEqual((st["containment"], st["memory_limit"]), ("proc", "rlimit"))
        rep = self.run_code("import resource; result = resource.getrlimit(resource.RLIMIT_AS)[0]",
                            max_memory_mb=LIMIT_MB)
        self.assertEqual(rep["result"], LIMIT_MB << 20, rep)


class TestIdleConfig(OpsTest):
    def kept(self, path):
        return self.status()["idle_pool"].get(path)

    def test_zygote_kept_and_restarted(self):
        rep = self.call("idle_config")
        self.assertEqual((rep["ok"], rep["config"]), (True, {}))
        rep = self.call("idle_config", python="3.11", count=2)
        self.assertTrue(rep["ok"], rep)
        self.assertEqual(list(rep["config"].values()), [2])
        path = list(rep["config"])[0]
        self.assertTrue(os.path.isabs(path))
        self.assertEqual(self.call("idle_config")["config"], {path: 2})
        td.wait_until(self, "the zygote to be ready",
                      lambda: (self.kept(path) or {}).get("ready"))
        k = self.kept(path)
        self.assertEqual(k["count"], 2)
        z = k["zygote_pid"]
        self.assertGreater(z, 0)
        self.assertIn(z, [x["pid"] for x in self.status()["zygotes"]])
        self.assertEqual(self.workers(), [])          # a zygote, not a worker
        os.kill(z, signal.SIGKILL)
        td.wait_until(self, "the zygote to come back",
                      lambda: (self.kept(path) or {}).get("ready")
                      and self.kept(path)["zygote_pid"] not in (0, z))
        td.wait_until(self, "zygote %d to be reaped" % z, lambda: td.pid_gone(z))
        # It forks workers as any zygote does.
        rep = self.run_code("pass")
        self.assertEqual(rep.get("started_by"), "zygote", rep)
        # 0 gives the interpreter back to the on-demand life.
        rep = self.call("idle_config", python="3.11", count=0)
        self.assertEqual(rep["config"], {})
        self.assertEqual(self.status()["idle_pool"], {})

    def test_refusals(self):
        rep = self.call("idle_config", count=1)
        self.assertEqual(rep["reason"], "badarg", rep)
        self.assertIn('"count" needs "python"', rep["error"])
        for bad in (65, -1, 1.5, "1"):
            rep = self.call("idle_config", python="3.11", count=bad)
            self.assertEqual(rep["reason"], "badarg", (bad, rep))
        rep = self.call("idle_config", python="3.99", count=1)
        self.assertEqual(rep["reason"], "nopython", rep)
        self.assertEqual(self.status()["idle_pool"], {})

    def test_cli(self):
        r = self.d.cli("idle-config")
        self.assertEqual((r.returncode, json.loads(r.stdout)), (0, {}), r.stderr)
        r = self.d.cli("idle-config", "--python", "3.11", "--count", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        config = json.loads(r.stdout)
        self.assertEqual(list(config.values()), [1])
        r = self.d.cli("idle-config")
        self.assertEqual(json.loads(r.stdout), config)
        r = self.d.cli("idle-config", "--count", "1")
        self.assertEqual(r.returncode, 100, r.stderr)
        r = self.d.cli("idle-config", "--python", "3.11", "--count", "65")
        self.assertEqual(r.returncode, 2, r.stderr)


if __name__ == "__main__":
    unittest.main()
