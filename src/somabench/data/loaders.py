"""Dataset loaders, registered by kind in ``somabench.registry.dataset_loaders``.

Why: ``conf/dataset/<name>.yaml`` picks its loader with ``loader:``; the runner never branches on
a dataset's name. A loader takes the whole ``dataset`` config (a plain mapping) and returns every
validated dialogue of the source in source order; selection happens afterwards, in
``somabench.data.select``.

- ``bundled``: ``file`` (or, with ``tiny: true``, ``tiny/<name>.jsonl``) under
  ``somabench/data/bundled/``.
- ``jsonl``: ``path``, a JSONL or JSONL.GZ file (or a ``*.json`` array file) in
  ``format`` (``auto`` | ``turns`` | ``messages`` | ``sharegpt``: ``somabench.data.formats``;
  absent = ``auto``). Relative paths are taken from the directory the command was started in,
  also under Hydra.
- ``hub``: ``hub`` mapping, read with the ``datasets`` library (``somabench.data.hub``).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from somabench.data.files import read_dialogues, read_dialogues_jsonl
from somabench.data.hub import load_hub
from somabench.data.schema import DatasetError, Dialogue

TINY_DIR = "tiny"


def bundled_dir() -> Path:
    """The directory holding the bundled ``*.jsonl.gz`` files and ``tiny/``."""
    return Path(str(resources.files("somabench.data") / "bundled"))


def _reject_tiny(cfg: Mapping[str, Any]) -> None:
    if cfg.get("tiny"):
        raise DatasetError(
            f"dataset.tiny=true needs bundled data, but '{cfg.get('name')}' uses loader="
            f"{cfg.get('loader')}; use limit=N to shrink the run instead"
        )


def load_bundled(cfg: Mapping[str, Any]) -> list[Dialogue]:
    """A file shipped in ``somabench/data/bundled/`` (sources in ``SOURCES.md``)."""
    name = cfg["name"]
    if cfg.get("tiny"):
        path = bundled_dir() / TINY_DIR / f"{name}.jsonl"
        if not path.is_file():
            raise DatasetError(
                f"dataset.tiny=true but there is no tiny sample for '{name}' ({path})"
            )
        return read_dialogues_jsonl(path)
    file = cfg.get("file")
    if not file:
        raise DatasetError(f"dataset '{name}' has loader=bundled but dataset.file is {file!r}")
    path = bundled_dir() / file
    if not path.is_file():
        available = sorted(p.name for p in bundled_dir().glob("*.jsonl.gz"))
        raise DatasetError(f"dataset.file={file!r}: no such bundled file; available: {available}")
    return read_dialogues_jsonl(path)


def load_jsonl(cfg: Mapping[str, Any]) -> list[Dialogue]:
    """A user file, e.g. ``dataset=custom dataset.path=my.jsonl`` (OpenAI ``messages``,
    ShareGPT ``conversations`` or the bundled line schema; ``dataset.format`` picks one)."""
    _reject_tiny(cfg)
    path = cfg.get("path")
    if not path:
        raise DatasetError(
            f"dataset '{cfg.get('name')}' has loader=jsonl but dataset.path is {path!r}; "
            "set dataset.path=<file.jsonl, file.jsonl.gz or file.json>"
        )
    from hydra.utils import to_absolute_path  # resolves against the launch dir under Hydra

    return read_dialogues(Path(to_absolute_path(str(Path(path).expanduser()))),
                          fmt=str(cfg.get("format") or "auto"), dataset=str(cfg["name"]))


def load_from_hub(cfg: Mapping[str, Any]) -> list[Dialogue]:
    """A Hugging Face hub dataset, converted row by row (``somabench.data.hub``)."""
    _reject_tiny(cfg)
    return load_hub(cfg)
