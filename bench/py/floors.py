"""Reference points measured in the same run as omnipkgd: a stdlib
multiprocessing forkserver pool's apply() round trip (a warm worker process
of the standard library, the nearest thing Python ships).  Stdlib only;
writes results/floors_py.json."""

import multiprocessing
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def answer(x):
    return x * 6


def main():
    ctx = multiprocessing.get_context("forkserver")
    n = common.iters(5000, 500)
    rows = []
    try:
        with ctx.Pool(1) as pool:
            for i in range(200):
                assert pool.apply(answer, (i,)) == i * 6
            v = []
            for i in range(n):
                t0 = common.now()
                r = pool.apply(answer, (i,))
                v.append(common.now() - t0)
                if r != i * 6:
                    raise RuntimeError("wrong answer %r" % r)
        rows.append(common.row("forkserver_pool_apply", v))
    except Exception as e:
        rows.append(common.unavailable("forkserver_pool_apply", "%s: %s" % (type(e).__name__, e)))
    common.write("floors_py", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
