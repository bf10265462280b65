"""Config helpers: locate conf/, compose outside Hydra's main, and explain bad overrides.

Why: Hydra rejects an unknown key but does not say which key was meant; researchers lose
minutes on ``method.gate.treshold``. We re-check a failed override and suggest the closest key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from somabench.registry import did_you_mean


def conf_dir() -> Path:
    """conf/ at the project root (the design card keeps it top level); override with
    SOMABENCH_CONF for installed copies."""
    env = os.environ.get("SOMABENCH_CONF")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2] / "conf"


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose the config tree like the CLI does (for tests, notebooks, re-judging)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []),
                             return_hydra_config=False)


def _keys_at(cfg: Any, path: list[str]) -> list[str]:
    node = cfg
    for part in path:
        if not isinstance(node, DictConfig) or part not in node:
            return []
        node = node[part]
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def explain_override_error(overrides: list[str], exc: Exception) -> str | None:
    """If ``exc`` is an unknown-key override error, return a message with a suggestion."""
    text = str(exc)
    match = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' (?:is not in struct|not in)", text)
    if not match:
        return None
    key = match.group(1)
    rest = [o for o in overrides if not o.lstrip("+~").startswith(key + "=")]
    try:
        base = compose(rest)
    except Exception:  # noqa: BLE001 - fall back to Hydra's own message
        return None
    parts = key.split(".")
    siblings = _keys_at(base, parts[:-1])
    where = ".".join(parts[:-1]) or "the root config"
    hint = did_you_mean(parts[-1], siblings)
    return (f"unknown config key '{key}' (in {where}).{hint}\n"
            f"Keys there: {', '.join(sorted(siblings))}.\n"
            f"To add a new key on purpose use +{key}=...")


def check_overrides(overrides: list[str]) -> None:
    """Compose once before Hydra runs; a bad override raises :class:`ConfigError` (unknown
    keys get a did-you-mean suggestion, other composition errors keep Hydra's message, a
    value outside its schema names the key and what it accepts: somabench.validate)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from somabench.errors import ConfigError

    plain = [o for o in overrides if not o.startswith(("hydra.", "hydra/", "--"))]
    try:
        cfg = compose(plain)
    except (HydraException, OmegaConfBaseException) as exc:
        message = explain_override_error(plain, exc)
        raise ConfigError(message or str(exc)) from None
    from somabench.validate import validate

    validate(cfg)


def to_dict(node: Any, resolve: bool = True) -> dict[str, Any]:
    """A config mapping as a plain ``dict`` (``OmegaConf.to_container`` types its result as
    any container; a mapping node is always a dict): one typed door for every reader."""
    data = OmegaConf.to_container(node, resolve=resolve) if isinstance(node, DictConfig) \
        else node
    if not isinstance(data, dict):
        from somabench.errors import ConfigError

        raise ConfigError(f"expected a mapping in the config, got {type(data).__name__}: {data!r}")
    return {str(k): v for k, v in data.items()}


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=False)


def progress_enabled(cfg: DictConfig) -> bool:
    """``progress: auto`` shows bars only on a terminal; ``true``/``false`` force it."""
    import sys

    setting = cfg.get("progress", "auto")
    return sys.stderr.isatty() if setting == "auto" else bool(setting)
