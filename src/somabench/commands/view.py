"""``python -m somabench view <run dir or outputs dir>... [--out FILE]``: one static HTML page
with every method's answers beside the Original's (the page itself: ``somabench.view``)."""

from __future__ import annotations

import argparse

from somabench import view


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m somabench view", description=(view.__doc__ or "").split("\n\n")[1])
    parser.add_argument("paths", nargs="+", help="run dirs or folders holding run dirs (outputs/<experiment>)")
    parser.add_argument("--out", default=None, help=f"the HTML file (default: <first path>/{view.DEFAULT_NAME})")
    args = parser.parse_args(argv)
    path = view.write_view(args.paths, args.out)
    print(f"wrote {path} (open it in a browser; no server needed)")
    return 0
