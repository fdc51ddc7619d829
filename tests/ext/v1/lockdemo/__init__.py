"""lockdemo 1.0: a tiny C-extension package (see _core.c)."""
from . import _core

__version__ = "1.0"


def answer():
    """The C library's answer: 1 for version 1.0, if the right code runs."""
    return _core.version()
