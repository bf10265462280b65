"""Datasets: validated multi-turn dialogues from bundled files, custom JSONL or the HF hub.

Why: the runner asks for ``load_dialogues(cfg.dataset, limit=cfg.limit, seed=cfg.seed,
shard=...)`` and gets the same validated ``Dialogue`` list for the same config, whatever the
source. The source is chosen by ``dataset.loader`` (a key of ``somabench.registry.dataset_loaders``:
``bundled``, ``jsonl``, ``hub``); filters, sample, shard and limit are described in
``somabench.data.select``; the line schema and its errors in ``somabench.data.schema``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from somabench.data.schema import DatasetError, Dialogue, Turn
from somabench.data.select import Selection, parse_shard, select_dialogues
from somabench.registry import dataset_loaders, hub_converters

# The data layer's registry table (somabench.registry's one convention: lazy, checked on load).
dataset_loaders.register("bundled", "somabench.data.loaders:load_bundled")
dataset_loaders.register("jsonl", "somabench.data.loaders:load_jsonl")
dataset_loaders.register("hub", "somabench.data.loaders:load_from_hub")
hub_converters.register("turns", "somabench.data.hub:convert_turns")
hub_converters.register("sharegpt", "somabench.data.hub:convert_sharegpt")
hub_converters.register("multichar", "somabench.data.hub:convert_multichar")

__all__ = ["DatasetError", "Dialogue", "Turn", "load_dialogues", "parse_shard"]

REQUIRED_KEYS = ("name", "loader", "file", "tiny", "path", "hub")


def _plain(dataset_cfg: Any) -> dict[str, Any]:
    """A resolved plain dict from a DictConfig (or any mapping)."""
    if isinstance(dataset_cfg, DictConfig):
        try:
            return OmegaConf.to_container(  # type: ignore[return-value]
                dataset_cfg, resolve=True, throw_on_missing=True
            )
        except MissingMandatoryValue as exc:
            key = str(exc.full_key)
            key = key if key.startswith("dataset.") else "dataset." + key
            raise DatasetError(
                f"{key} is required (it is ??? in the config); set {key}=..."
            ) from exc
    if isinstance(dataset_cfg, Mapping):
        return dict(dataset_cfg)
    raise DatasetError(f"dataset config must be a mapping, got {type(dataset_cfg).__name__}")


def load_dialogues(
    dataset_cfg: Any, *, limit: int | None, seed: int, shard: str | None = None
) -> list[Dialogue]:
    """The dialogues a run (or one shard of it) processes, in a deterministic order.

    ``dataset_cfg`` is the composed ``dataset`` config (DictConfig or mapping). Steps: load and
    validate every dialogue with the ``dataset.loader`` loader; filter (``tasks``,
    ``min_turns``/``max_turns``, ``context_dependent_only``); ``truncate_turns``; seeded
    ``sample`` (``seed``); ``shard="i/n"`` keeps positions ``p % n == i``; then the first
    ``limit`` of the shard. Raises ``DatasetError`` for bad data or config values and
    ``RegistryError`` (with a did-you-mean) for an unknown loader.
    """
    cfg = _plain(dataset_cfg)
    missing = [key for key in REQUIRED_KEYS if key not in cfg]
    if missing:
        raise DatasetError(
            f"dataset config lacks key(s) {['dataset.' + k for k in missing]}; every "
            "conf/dataset/*.yaml sets them"
        )
    selection = Selection.from_cfg(cfg)
    parse_shard(shard)  # fail on a bad shard before loading anything
    loader = dataset_loaders.get(cfg["loader"])
    dialogues = loader(cfg)
    return select_dialogues(
        dialogues, selection, name=cfg["name"], limit=limit, seed=seed, shard=shard
    )
