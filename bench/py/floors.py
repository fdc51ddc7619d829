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


def _echo_server(sock):
    """Answers each frame (4-byte length + JSON) with a JSON reply of the
    size of a hot exec's, as a minimal Python server would."""
    import json
    import struct
    hdr = struct.Struct(">I")
    buf = b""
    while True:
        while len(buf) < 4 or len(buf) < 4 + hdr.unpack_from(buf)[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
        n = hdr.unpack_from(buf)[0]
        req = json.loads(buf[4:4 + n])
        buf = buf[4 + n:]
        body = json.dumps({"v": 1, "id": req["id"], "ok": True, "stdout": "", "stderr": "",
                           "duration": 1e-05, "worker_pid": 4242, "spec": "base",
                           "python": "/usr/bin/python3"}).encode()
        sock.sendall(hdr.pack(len(body)) + body)


def python_echo(n):
    """The floor of a Python client: a Python-to-Python round trip over a
    Unix socket with the same framing and JSON as a hot exec request and
    reply, the server in another process."""
    import json
    import socket
    import struct
    hdr = struct.Struct(">I")
    a, b = socket.socketpair()
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_echo_server, args=(b,))
    p.start()
    b.close()
    v = []
    try:
        buf = b""
        for i in range(n + 200):
            t0 = common.now()
            body = json.dumps({"v": 1, "id": i, "op": "exec", "spec": "base", "python": "3.11",
                               "code": "pass"}).encode()
            a.sendall(hdr.pack(len(body)) + body)
            while len(buf) < 4 or len(buf) < 4 + hdr.unpack_from(buf)[0]:
                chunk = a.recv(65536)
                if not chunk:
                    raise RuntimeError("the echo server went away")
                buf += chunk
            k = hdr.unpack_from(buf)[0]
            rep = json.loads(buf[4:4 + k])
            buf = buf[4 + k:]
            if rep.get("id") != i:
                raise RuntimeError("echo answered %r for %d" % (rep.get("id"), i))
            if i >= 200:
                v.append(common.now() - t0)
    finally:
        a.close()
        p.join(10)
    return common.row("python_socket_echo", v,
                      extra={"what": "Python to Python, Unix socket, 4-byte frames, JSON both ways"})


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
    try:
        rows.append(python_echo(n))
    except Exception as e:
        rows.append(common.unavailable("python_socket_echo", "%s: %s" % (type(e).__name__, e)))
    common.write("floors_py", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
