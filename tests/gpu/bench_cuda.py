"""CUDA IPC benchmark (GPU only; tests/gpu/run.sh runs it): a 1 MB and a
1 GB float32 torch tensor in and out through a cupy worker, the first call
(handles opened) and cached calls (median of many), beside a plain hot exec
in the same daemon and run.  Target: cached <= hot exec + 10 us at every
size.  Writes results/cuda_<host>.json and prints one line a row."""
import json
import os
import platform
import statistics
import sys
import time

import harness
import torch

from omnipkg import DaemonClient

CUPY = os.environ.get("OMNIPKG_GPU_CUPY_SPEC", "cupy-cuda12x")
REPEAT = int(os.environ.get("OMNIPKG_BENCH_REPEAT", "500"))
SIZES = [("1MB", 1 << 20), ("1GB", 1 << 30)]
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def us(f, n):
    t = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        f()
        t.append((time.perf_counter_ns() - t0) / 1000.0)
    return statistics.median(t)


def main():
    d = harness.DaemonFixture()
    d.env["OMNIPKG_CUDA_LIB"] = os.environ["OMNIPKG_CUDA_LIB"]
    d.start()
    try:
        c = DaemonClient(socket_path=d.socket, auto_start=False)
        code = "pass"          # the transport, not the kernel, is measured
        c.execute(CUPY, "import cupy")                  # warm the worker
        hot = us(lambda: c.execute(CUPY, code), REPEAT)
        rows = []
        for name, nbytes in SIZES:
            n = nbytes // 4
            x = torch.ones(n, device="cuda")
            out = torch.empty(n, device="cuda")
            t0 = time.perf_counter_ns()
            c.execute_cuda_ipc(CUPY, code, x, None, None, out=out, framework="cupy")
            first = (time.perf_counter_ns() - t0) / 1000.0
            cached = us(lambda: c.execute_cuda_ipc(CUPY, code, x, None, None, out=out,
                                                   framework="cupy"), REPEAT)
            row = {"size": name, "bytes": nbytes, "first_us": round(first, 1),
                   "cached_us": round(cached, 1), "hot_exec_us": round(hot, 1),
                   "target_met": cached <= hot + 10.0}
            rows.append(row)
            print("cuda %s first: %.1f us, cached: %.1f us/call (hot exec %.1f us)%s"
                  % (name, first, cached, hot, "" if row["target_met"] else "  TARGET MISSED"))
            del x, out
            torch.cuda.empty_cache()
        doc = {"host": platform.node(), "gpu": torch.cuda.get_device_name(0),
               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "repeat": REPEAT, "rows": rows}
        path = os.path.join(REPO, "results", "cuda_%s.json" % platform.node())
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
        print("wrote", path)
        return 0 if all(r["target_met"] for r in rows) else 1
    finally:
        d.stop()


if __name__ == "__main__":
    sys.exit(main())
