"""Our side of an interleaved comparison: starts omnipkgd (as ours.py does)
and runs batches of calls on request, so that another process can
alternate them with its own (A B A B ...) and drift hits both sides.

    python agent_ours.py     reads one JSON request per line on stdin:
        {"case": "hot"|"json", "n": N}   -> {"v": [seconds, ...]} (every answer checked)
        {"case": "warm", "n": N}         -> {"v": []} (N calls of each case, unmeasured)
        {"case": "info"}                 -> {"python": ..., "client": ...}
    EOF stops the daemon.  Errors are {"error": "..."}.

The cases are the calls peer_omnipkg.py makes on omnipkg 3.4.1 (CASES
there must match): the same client language, call, spec and code.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import ours  # noqa: E402  (its Daemon and our client on sys.path)

SPEC = "numpy==1.26.4"
HOT_CODE = "pass"
JSON_CODE = "import json\nprint(json.dumps(arr_in, sort_keys=True))"
PAYLOAD = {"name": "bench", "ints": list(range(20)), "nested": {"a": 1.5, "b": "text", "c": [1, 2, 3]},
           "words": ["alpha", "beta", "gamma", "delta"], "n": 12345}


def hot(c, py):
    r = c.execute_shm(SPEC, HOT_CODE, {}, {}, python_exe=py)
    if r.get("status") != "COMPLETED":
        raise RuntimeError("pass failed: %s" % r.get("error"))


def smart(c, py):
    r = c.execute_smart(SPEC, JSON_CODE, data=PAYLOAD, python_exe=py)
    if not r.get("success") or r.get("transport") != "JSON" or json.loads(r["result"]) != PAYLOAD:
        raise RuntimeError("execute_smart JSON round trip wrong: %r" % (r,))


CASES = {"hot": hot, "json": smart}


def main():
    py = os.environ.get("OMNI_AGENT_PYTHON") or None    # the interpreter the peer's workers use
    d = ours.Daemon()
    d.start()
    c = d.client()
    try:
        for line in sys.stdin:
            req = json.loads(line)
            try:
                case, n = req.get("case"), int(req.get("n", 0))
                if case == "info":
                    out = {"python": py, "client": "omnipkg (omnipkgd) %s" % ours.__file__}
                elif case == "warm":
                    for fn in CASES.values():
                        for _ in range(n):
                            fn(c, py)
                    out = {"v": []}
                else:
                    fn = CASES[case]
                    v = []
                    for _ in range(n):
                        t0 = common.now()
                        fn(c, py)
                        v.append(common.now() - t0)
                    out = {"v": v}
            except Exception as e:
                out = {"error": "%s: %s" % (type(e).__name__, e)}
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
    finally:
        c.close()
        d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
