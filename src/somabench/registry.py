"""Named registries: methods, backends, dataset loaders, judge panels and judge kinds.

Why: runner, records and reports never branch on a name; they look it up here. Heavy optional
dependencies (vllm, llmlingua, routellm) register lazily as ``"module:attr"`` strings so that
importing somabench never imports them.

One convention: a registry key is the name a user types. ``method=<key>`` and ``judge=<key>``
are config file stems (``conf/method/<key>.yaml``, ``conf/judge/<key>.yaml``);
``model.<role>.backend=<key>``, ``dataset.loader=<key>`` and a panel entry's ``kind: <key>``
name backends, loaders and judge kinds. ``tests/test_registry.py`` checks each kind against
conf/. Each registry checks what it is given: a subclass of its base class (methods,
backends), or a callable (factories).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """Unknown or duplicate name in a registry; the message says what is available."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


def did_you_mean(name: str, options: list[str] | tuple[str, ...]) -> str:
    """A short 'Did you mean ...?' hint, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """A name -> object map with decorator registration, lazy entries and helpful errors.

    ``base`` (a class or ``"module:Class"``, imported on first check) is what every entry must
    subclass; ``factories=True`` requires callables instead."""

    def __init__(self, kind: str, base: type | str | None = None, factories: bool = False) -> None:
        self.kind = kind
        self.base = base
        self.factories = factories
        self._entries: dict[str, T | str] = {}

    def _check(self, name: str, obj: object) -> None:
        """Refuse an entry of the wrong type (a typo'd decorator target, a stale lazy path)."""
        base = self.base
        if isinstance(base, str):
            module_name, _, attr = base.partition(":")
            base = self.base = getattr(importlib.import_module(module_name), attr)
        if self.factories and not callable(obj):
            raise RegistryError(f"{self.kind} '{name}' must be callable, got {obj!r}")
        if base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
            raise RegistryError(f"{self.kind} '{name}' must be a subclass of "
                                f"{base.__module__}.{base.__qualname__}, got {obj!r}")

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | T | str:
        """Register ``obj`` under ``name``; use as ``@registry.register("name")`` on a class."""
        if obj is not None:
            self._add(name, obj)
            return obj

        def decorator(target: T) -> T:
            self._add(name, target)
            return target

        return decorator

    def _add(self, name: str, obj: T | str) -> None:
        if not isinstance(obj, str):
            self._check(name, obj)
        if name in self._entries and self._entries[name] is not obj:
            existing = self._entries[name]
            # Re-importing the same module (e.g. a lazy string resolved) is not a duplicate.
            if not (isinstance(existing, str) and not isinstance(obj, str)):
                raise RegistryError(f"{self.kind} '{name}' is registered twice.")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """Return the object for ``name``, importing a lazy entry on first use."""
        if name not in self._entries:
            names = self.names()
            raise RegistryError(
                f"Unknown {self.kind} '{name}'.{did_you_mean(name, names)} "
                f"Available: {', '.join(names)}."
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                if (exc.name or "") == "somabench" or (exc.name or "").startswith("somabench."):
                    raise  # our own code is broken: not a missing optional dependency
                raise ImportError(
                    f"{self.kind} '{name}' needs an optional dependency that is not installed "
                    f"({exc}). See the README section on extras."
                ) from exc
            resolved = getattr(module, attr)
            self._check(name, resolved)
            self._entries[name] = resolved
            return resolved
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


methods: Registry[Any] = Registry("method", base="somabench.methods:Method")
"""``method=<name>``: ``Method`` subclasses (``conf/method/<name>.yaml``)."""
backends: Registry[Any] = Registry("backend", base="somabench.backends.base:BackendBase")
"""``model.<role>.backend=<name>``: ``BackendBase`` subclasses."""
dataset_loaders: Registry[Any] = Registry("dataset loader", factories=True)
"""``dataset.loader=<name>``: functions that read dialogues (``conf/dataset/*.yaml`` pick one)."""
judges: Registry[Any] = Registry("judge", factories=True)
"""``judge=<name>``: judge panels (``conf/judge/<name>.yaml``), each ``(cfg, run_dir) ->
objective``. "Judge" always means a panel."""
judge_kinds: Registry[Any] = Registry("judge kind", factories=True)
"""A panel entry's ``kind``: factories ``(name, spec, panel_cfg, cache, cache_dir) -> Judge``."""
datasets = dataset_loaders  # the data layer's name for it (``@datasets.register("jsonl")``)

ALL = {"method": methods, "backend": backends, "dataset_loader": dataset_loaders,
       "judge": judges, "judge_kind": judge_kinds}
"""Registries by the word ``python -m somabench ls <kind>`` takes."""


def load_builtin() -> None:
    """Import the modules whose decorators populate the registries (idempotent)."""
    for module in (
        "somabench.backends",
        "somabench.data",
        "somabench.methods",
        "somabench.baselines",
        "somabench.soma",
        "somabench.judges",
    ):
        importlib.import_module(module)
