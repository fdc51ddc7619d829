"""Framing over the private socket to the daemon: a 4-byte big-endian
length, then that many bytes of UTF-8 JSON holding one object
(src/proto.h).  A frame that cannot be read as a frame (length 0 or over
the maximum, EOF inside one) is fatal: the stream can no longer be
trusted.  A frame whose payload is not a JSON object is not: it decodes to
a message with op "?" and the reason in "_bad", which the caller answers."""

import json
import os
import socket
import struct

MAX_FRAME = 16 << 20          # PROTO_MAX_FRAME in proto.h
_HDR = struct.Struct(">I")


def fatal(why):
    try:
        os.write(2, ("omnipkgd worker %d: %s\n" % (os.getpid(), why)).encode())
    finally:
        os._exit(2)


def _check_len(n):
    if n == 0 or n > MAX_FRAME:
        fatal("bad frame length %d" % n)


class FrameReader:
    """Buffered reading of frames: usually one recv() per message."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def read(self):
        """The next message as a dict, None on EOF."""
        buf = self.buf
        while True:
            want = 1 << 16
            if len(buf) >= 4:
                n = _HDR.unpack_from(buf)[0]
                _check_len(n)
                if len(buf) >= 4 + n:
                    payload = bytes(buf[4:4 + n])
                    del buf[:4 + n]
                    return decode(payload)
                want = max(want, 4 + n - len(buf))
            chunk = self.sock.recv(want)
            if not chunk:
                if buf:
                    fatal("channel closed in the middle of a frame")
                return None
            buf += chunk


def decode(payload):
    try:
        msg = json.loads(payload.decode("utf-8"))
    except Exception as e:   # not UTF-8, not JSON, or nested past the recursion limit
        return {"op": "?", "_bad": "payload is not UTF-8 JSON: %s: %s"
                % (type(e).__name__, e)}
    if not isinstance(msg, dict):
        return {"op": "?", "_bad": "payload is not a JSON object"}
    return msg


# allow_nan=False: NaN/Infinity are not JSON and the daemon's parser rejects
# them.  One encoder, made once: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps(obj):
    # Lone surrogates (possible in user strings) cannot be encoded as UTF-8;
    # they become "?" instead of breaking the frame.
    return _ENCODER.encode(obj).encode("utf-8", "replace")


def send_frame(sock, payload):
    # One sendall of header + body: a frame is never interleaved.
    sock.sendall(_HDR.pack(len(payload)) + payload)


def send_msg(sock, obj):
    send_frame(sock, dumps(obj))


def _recv_with_fds(sock, n, fds):
    """n bytes from sock (None on EOF at a frame boundary), also collecting
    any fds that arrive with them.  Reading never crosses a frame boundary,
    so fds that come with a frame's bytes belong to that frame."""
    buf = bytearray()
    flags = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
    while len(buf) < n:
        if hasattr(socket, "recv_fds"):                      # 3.9+
            data, got, _, _ = socket.recv_fds(sock, n - len(buf), 4, flags)
        else:                                                # 3.8
            import array
            a = array.array("i")
            data, anc, _, _ = sock.recvmsg(n - len(buf), socket.CMSG_SPACE(4 * a.itemsize), flags)
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    a.frombytes(cdata[:len(cdata) - len(cdata) % a.itemsize])
            got = list(a)
        fds.extend(got)
        if not data:
            if buf:
                fatal("channel closed in the middle of a frame")
            return None
        buf += data
    return bytes(buf)


def read_with_fds(sock, fds):
    """The next message as a dict (None on EOF), unbuffered, appending the
    fds that came with it to fds; the caller owns (and closes) them."""
    hdr = _recv_with_fds(sock, 4, fds)
    if hdr is None:
        return None
    n = _HDR.unpack(hdr)[0]
    _check_len(n)
    payload = _recv_with_fds(sock, n, fds)
    if payload is None:
        fatal("channel closed in the middle of a frame")
    return decode(payload)
