"""``python -m somabench serve --asset NAME | --path DIR [--port N]``: serve one local model as
an OpenAI-compatible endpoint on loopback (the server itself: ``somabench.serve``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from somabench.serve import LOOPBACK_HOST, OpenAICompatServer, check_loopback, run_until_stopped


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m somabench serve",
        description="Serve a local model as an OpenAI-compatible endpoint on "
                    "127.0.0.1. Example: python -m somabench serve --asset smollm2-135m-instruct "
                    "--port 8000, then model.F.backend=openai "
                    "model.F.base_url=http://127.0.0.1:8000/v1 "
                    "model.F.model_id=HuggingFaceTB/SmolLM2-135M-Instruct",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--asset", help="offline model asset name (see python -m somabench assets list)")
    src.add_argument("--path", help="a local Hugging Face model directory")
    p.add_argument("--model-id", help="name clients must send as 'model' (default: the asset's "
                   "hub id, as in conf/model, or the directory name)")
    p.add_argument("--dtype", default="auto", help="model dtype: auto (per machine, somabench.dtype) | bfloat16 | float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--host", default=LOOPBACK_HOST, help="must be 127.0.0.1 (loopback only)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--default-max-tokens", type=int, default=256,
                   help="max_tokens when a request gives none")
    p.add_argument("--max-requests", type=int, default=None, help="stop after N requests")
    p.add_argument("--lifetime-seconds", type=float, default=None, help="stop after S seconds")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str]) -> int:
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    check_loopback(args.host)
    from somabench.backends.hf import HFBackend

    if args.asset:
        from somabench import assets

        path = str(assets.resolve(args.asset))
        model_id = args.model_id or assets.ASSETS[args.asset].hub_id  # = conf model_id
    else:
        path = args.path
        model_id = args.model_id or Path(args.path).name
    backend = HFBackend(model_id=model_id, path=path, dtype=args.dtype, device=args.device,
                        num_threads=args.num_threads)
    return run_until_stopped(OpenAICompatServer(
        backend, default_max_tokens=args.default_max_tokens, max_requests=args.max_requests,
        lifetime_seconds=args.lifetime_seconds, host=args.host, port=args.port))

