"""lockdemo 2.0: a tiny C-extension package (see _core.c)."""
from . import _core

__version__ = "2.0"


def answer():
    """The C library's answer: 2 for version 2.0, if the right code runs."""
    return _core.version()
