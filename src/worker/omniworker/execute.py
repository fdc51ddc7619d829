"""Running one job: the worker's globals (they persist between jobs), a
cache of compiled sources, the job's `result`, and its error as text.

Jobs start, as omnipkg's do, with sys, os and json bound, and np when
numpy can be imported: a stand-in module that imports numpy on first use,
so that a worker whose jobs never touch it never pays for the import."""

import builtins
import importlib
import importlib.util
import json
import os
import sys
import time
import traceback
import types

from omniworker.frame import MAX_FRAME, dumps


class LazyModule(types.ModuleType):
    """Module `name` bound as G[alias], imported when an attribute is first
    read; then G[alias] becomes the module itself."""

    def __init__(self, name, G, alias):
        super().__init__(name)
        self.__dict__["_lazy"] = (G, alias)

    def __getattr__(self, attr):
        G, alias = self.__dict__["_lazy"]
        mod = importlib.import_module(self.__name__)
        if G.get(alias) is self:
            G[alias] = mod
        return getattr(mod, attr)

    def __repr__(self):
        return "<module %r (imported on first use)>" % (self.__name__,)


class Executor:
    def __init__(self):
        self.G = {"__name__": "__main__", "__builtins__": builtins,
                  "sys": sys, "os": os, "json": json}
        self.codes = {}          # source -> code object: repeated jobs skip compile

    def bind_lazy(self, alias, name):
        """G[alias] = module name, imported on first use, when it can be
        found on sys.path (a bubble's or the interpreter's own)."""
        if alias in self.G:
            return
        if name in sys.modules:
            self.G[alias] = sys.modules[name]
            return
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            self.G[alias] = LazyModule(name, self.G, alias)

    def run(self, src, rep):
        """Runs src in the globals; sets ok, error, traceback, duration and
        result in rep."""
        G = self.G
        G.pop("result", None)
        t0 = time.perf_counter()
        try:
            code = self.codes.get(src)
            if code is None:
                code = compile(src, "<omnipkg>", "exec")
                if len(src) <= 65536:          # small sources only: bounded memory
                    if len(self.codes) >= 64:
                        self.codes.clear()
                    self.codes[src] = code
            exec(code, G)
        except BaseException as e:   # SystemExit and KeyboardInterrupt too
            rep["ok"] = False
            rep["error"] = error_text(e)
            # Drop our own frame (the exec call); keep the <omnipkg> ones.
            tb = e.__traceback__.tb_next if e.__traceback__ else None
            rep["traceback"] = "".join(traceback.format_exception(type(e), e, tb))
            del e, tb
        rep["duration"] = time.perf_counter() - t0
        if rep["ok"] and "result" in G:
            rep["result"] = G["result"]


def error_text(e):
    name = type(e).__name__
    if isinstance(e, SystemExit):
        return "SystemExit: %s" % (e.code,)
    try:
        msg = str(e)
    except Exception:
        msg = "<str() of the exception failed>"
    return "%s: %s" % (name, msg) if msg else name


def encode_done(rep):
    """The "done" payload for rep; a result that cannot be sent fails the job."""
    try:
        payload = dumps(rep)
    except Exception as e:
        # Everything but `result` is plain text and numbers, so it is
        # the result that cannot be encoded.
        rep.pop("result", None)
        rep["ok"] = False
        rep["error"] = "TypeError: result is not JSON-serialisable: %s" % e
        rep["traceback"] = ""
        payload = dumps(rep)
    if len(payload) > MAX_FRAME and "result" in rep:
        rep.pop("result")
        rep["ok"] = False
        rep["error"] = ("ValueError: result is too large for one message "
                        "(%d bytes; at most %d)" % (len(payload), MAX_FRAME))
        rep["traceback"] = ""
        payload = dumps(rep)
    while len(payload) > MAX_FRAME:
        # Escaping can grow text past the cap; halve the larger stream.
        k = "stdout" if len(rep["stdout"]) >= len(rep["stderr"]) else "stderr"
        rep[k] = rep[k][:len(rep[k]) // 2]
        rep[k + "_truncated"] = True
        payload = dumps(rep)
    return payload
