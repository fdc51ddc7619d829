"""The command line: worker FD [PATH...] | zygote FD."""

import sys


def main(argv):
    if len(argv) < 3 or argv[1] not in ("worker", "zygote") or not argv[2].isdigit():
        sys.stderr.write("usage: worker.py worker FD [PATH...] | zygote FD\n")
        return 2
    fd = int(argv[2])
    if argv[1] == "worker":
        from omniworker import serve
        serve.worker_main(fd, argv[3:])
    else:
        from omniworker import zygote
        zygote.zygote_main(fd)
    return 0
