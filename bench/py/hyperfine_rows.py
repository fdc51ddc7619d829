"""Turns hyperfine's --export-json files into results/whole_commands.json
(rows with the raw times' statistics and histogram, and the ratio of each
omnipkg command to the plain python command it is paired with).

    python3 hyperfine_rows.py PAIR_NAME=FILE.json ...

Each FILE holds two commands measured side by side: the first is ours
(`omnipkg exec ...`), the second its reference (`python -c ...`)."""

import json
import sys
import os

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main(args):
    rows = []
    for a in args:
        pair, path = a.split("=", 1)
        try:
            with open(path) as f:
                res = json.load(f)["results"]
            if len(res) != 2:
                raise ValueError("expected 2 commands, found %d" % len(res))
        except (OSError, ValueError, KeyError) as e:
            rows.append(common.unavailable("cmd_%s_omnipkg_exec" % pair, "hyperfine did not run: %s" % e))
            continue
        ref = common.row("cmd_%s_python_c" % pair, res[1]["times"], extra={"command": res[1]["command"]})
        ours = common.row("cmd_%s_omnipkg_exec" % pair, res[0]["times"], ref=(ref["name"], ref["p50"]),
                          extra={"command": res[0]["command"]})
        rows += [ours, ref]
    common.write("whole_commands", rows, {"hyperfine": os.environ.get("HYPERFINE_VERSION", "")})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
