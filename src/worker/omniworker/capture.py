"""Per-job capture of fds 1 and 2.

Each stream goes to an anonymous file of its own.  A job may close,
redirect or replace anything on its way (sys.stdout.close(), os.close(1),
os.dup2(x, 1), sys.stdout = StringIO()), so begin() re-establishes all of
it before every job: fd 1 and fd 2 on their empty capture files, and
sys.stdout / sys.stderr (and the __stdout__ / __stderr__ copies) working
text streams on them.  That costs two dup2() a job; the stat that tells
whether our own fds are still ours is the one collect() needs anyway, and
streams are made anew only when unusable."""

import fcntl
import io
import os
import sys


def _anon_file(name):
    """An fd (above 2, not inherited) on an anonymous file."""
    fd = -1
    if hasattr(os, "memfd_create"):
        try:
            fd = os.memfd_create(name, getattr(os, "MFD_CLOEXEC", 1))
        except OSError:
            pass
    if fd < 0:
        import tempfile
        f = tempfile.TemporaryFile()
        fd = os.dup(f.fileno())   # dup is non-inheritable; the file is unlinked
        f.close()
    if fd <= 2:                   # a job closed fd 1 or 2: that slot is not ours
        low = fd
        fd = fcntl.fcntl(low, fcntl.F_DUPFD_CLOEXEC, 3)
        os.close(low)
    return fd


def _text_stream(fd):
    # Line-buffered text over fd 1/2: a print() reaches the fd at its newline,
    # in order with os.write() and C-level writes to the same fd.
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8",
                            errors="backslashreplace", line_buffering=True)


def _usable(s, fd):
    try:
        return not s.closed and s.fileno() == fd and s.line_buffering
    except Exception:             # detached, or its buffer replaced
        return False


class Capture:
    """The capture files and the text streams of one worker process.  Made
    per worker, never in the zygote: forked workers must not share them."""

    NAMES = ("stdout", "stderr")

    def __init__(self):
        self.fds = [-1, -1]       # our own fds on the capture files
        self.ids = [None, None]   # (st_dev, st_ino) of each, to know it is still ours
        self.dirty = [False, False]
        self.streams = [None, None]
        for i in (0, 1):
            self._new_file(i)

    def _new_file(self, i):
        fd = _anon_file("omnipkg-" + self.NAMES[i])
        st = os.fstat(fd)
        self.fds[i] = fd
        self.ids[i] = (st.st_dev, st.st_ino)
        self.dirty[i] = False

    def begin(self):
        """Before a job: fds 1 and 2 on empty capture files, sys streams on them."""
        for i in (0, 1):
            try:
                if self.dirty[i]:
                    os.ftruncate(self.fds[i], 0)
                    os.lseek(self.fds[i], 0, os.SEEK_SET)   # the offset is shared with fd 1/2
                    self.dirty[i] = False
                os.dup2(self.fds[i], i + 1)
            except OSError:       # our fd was closed since collect(): by a stray thread
                self._new_file(i)
                os.dup2(self.fds[i], i + 1)
            if not _usable(self.streams[i], i + 1):
                self.streams[i] = _text_stream(i + 1)
        sys.stdout = sys.__stdout__ = self.streams[0]
        sys.stderr = sys.__stderr__ = self.streams[1]

    def flush(self):
        for s in (sys.stdout, sys.stderr, self.streams[0], self.streams[1]):
            try:
                s.flush()
            except Exception:
                pass

    def collect(self, rep, cap):
        """After a job (and flush()): its output into rep, at most cap bytes
        per stream."""
        for i in (0, 1):
            name = self.NAMES[i]
            fd = self.fds[i]
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != self.ids[i]:
                    raise OSError("not ours")
                total = st.st_size
                data = os.pread(fd, min(total, cap), 0) if total else b""
            except OSError:       # the job closed our fd: what sits there now is its own
                self._new_file(i)
                total, data = 0, b""
            self.dirty[i] = total > 0
            rep[name] = data.decode("utf-8", "replace")
            rep[name + "_bytes"] = total
            rep[name + "_truncated"] = total > cap
