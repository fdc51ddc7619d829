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
MAX_FDS = 8                   # CHAN_MAX_FDS in chan.h: descriptors one frame may carry
_HDR = struct.Struct(">I")
_INT = struct.Struct("i")
_ANC = socket.CMSG_SPACE(MAX_FDS * _INT.size)
_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


def fatal(why):
    try:
        os.write(2, ("omnipkgd worker %d: %s\n" % (os.getpid(), why)).encode())
    finally:
        os._exit(2)


def _check_len(n):
    if n == 0 or n > MAX_FRAME:
        fatal("bad frame length %d" % n)


def close_fds(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _fds_of(anc):
    fds = []
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            n = len(data) // _INT.size
            fds.extend(_INT.unpack_from(data, i * _INT.size)[0] for i in range(n))
    return fds


class FrameReader:
    """Buffered reading of frames: usually one recvmsg() per message.

    Descriptors travel with the frame whose first byte their send carried
    (src/chan.h): those of one recvmsg() belong to the last frame that
    starts in the bytes it returned.  After read(), .fds holds the
    descriptors of the frame it returned; the caller owns them."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0             # stream offset of buf[0]
        self.reads = []          # (begin, end, fds) of reads that brought descriptors
        self.fds = []

    def read(self):
        """The next message as a dict, None on EOF."""
        buf = self.buf
        self.fds = []
        while True:
            want = 1 << 16
            if len(buf) >= 4:
                n = _HDR.unpack_from(buf)[0]
                _check_len(n)
                if len(buf) >= 4 + n:
                    payload = bytes(buf[4:4 + n])
                    del buf[:4 + n]
                    if self.reads:
                        self.fds = self._claim(4 + n)
                    self.pos += 4 + n
                    return decode(payload)
                want = max(want, 4 + n - len(buf))
            chunk, anc, _, _ = self.sock.recvmsg(want, _ANC, _CLOEXEC)
            if anc:
                fds = _fds_of(anc)
                if fds:
                    begin = self.pos + len(buf)
                    self.reads.append((begin, begin + len(chunk), fds))
            if not chunk:
                for r in self.reads:
                    close_fds(r[2])
                self.reads = []
                if buf:
                    fatal("channel closed in the middle of a frame")
                return None
            buf += chunk

    def _claim(self, n):
        """The descriptors of the frame [pos, pos + n): those of reads that
        ended inside it and began at or before its start (a read that began
        later had them attached mid-frame: no frame's, closed)."""
        start, end, mine = self.pos, self.pos + n, []
        while self.reads and self.reads[0][1] <= end:
            begin, _, fds = self.reads.pop(0)
            if begin <= start:
                mine.extend(fds)
            else:
                close_fds(fds)
        return mine


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
