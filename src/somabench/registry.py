"""Named registries: methods, backends, dataset loaders, hub converters, judge panels and kinds.

Why: runner, records and reports never branch on a name; they look it up here.

One convention (lm-evaluation-harness's ``api/registry.py`` rule): every built-in entry is a
lazy ``"module:attr"`` string in its package's table (``backends/__init__.py``,
``data/__init__.py``, ``baselines/__init__.py``, ``soma/__init__.py``, ``judges/__init__.py``),
added with ``registry.register(name, "module:attr", aliases=(...))``. Importing somabench never
imports a heavy optional dependency (vllm, llmlingua, routellm), and each entry is checked
against what it loads on first use: a subclass of the registry's base class, or a callable.
An object (a test double, a plugin) registers the same way: ``register(name, obj)``.

A registry key is the name a user types: ``method=<key>`` and ``judge=<key>`` are config file
stems (``conf/method/<key>.yaml``, ``conf/judge/<key>.yaml``); ``model.<role>.backend=<key>``,
``dataset.loader=<key>``, ``dataset.hub.converter=<key>`` and a panel entry's ``kind: <key>``
name backends, loaders, converters and judge kinds. ``tests/test_registry.py`` checks each
kind against conf/; ``somabench ls <kind>`` lists them (:data:`ALL`).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:  # types only: the ground floor imports nothing above it at run time
    from somabench.backends.base import BackendBase
    from somabench.data.schema import Dialogue
    from somabench.judges.base import Judge
    from somabench.methods import Method

T = TypeVar("T")
LAZY_SEPARATOR = ":"


class RegistryError(KeyError):
    """Unknown or duplicate name in a registry; the message says what is available."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


def did_you_mean(name: str, options: list[str] | tuple[str, ...]) -> str:
    """A short 'Did you mean ...?' hint, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def _import_target(target: str) -> object:
    module_name, _, attr = target.partition(LAZY_SEPARATOR)
    return getattr(importlib.import_module(module_name), attr)


class Registry(Generic[T]):
    """A name -> object map with lazy entries, aliases and helpful errors.

    ``base`` (a class or ``"module:Class"``, imported on first check) is what every entry must
    subclass; ``factories=True`` requires callables instead."""

    def __init__(self, kind: str, base: type | str | None = None, factories: bool = False) -> None:
        self.kind = kind
        self._base = base
        self.factories = factories
        self._entries: dict[str, T | str] = {}
        self._aliases: dict[str, str] = {}

    @property
    def base(self) -> type | None:
        """The class every entry must subclass (imported on first use)."""
        if isinstance(self._base, str):
            resolved = _import_target(self._base)
            if not isinstance(resolved, type):
                raise RegistryError(f"{self.kind} registry: base {self._base} is not a class")
            self._base = resolved
        return self._base

    def _check(self, name: str, obj: object) -> T:
        """Refuse an entry of the wrong type (a typo'd target, a stale lazy path)."""
        if self.factories and not callable(obj):
            raise RegistryError(f"{self.kind} '{name}' must be callable, got {obj!r}")
        base = self.base
        if base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
            raise RegistryError(f"{self.kind} '{name}' must be a subclass of "
                                f"{base.__module__}.{base.__qualname__}, got {obj!r}")
        return obj  # type: ignore[return-value]  # checked against base/callable just above

    def register(self, name: str, target: T | str, *, aliases: Iterable[str] = ()) -> None:
        """Add ``target`` (an object, or a lazy ``"module:attr"`` checked when first loaded)
        under ``name``; ``aliases`` are other names for the same entry."""
        if isinstance(target, str):
            if LAZY_SEPARATOR not in target:
                raise RegistryError(f"{self.kind} '{name}': a lazy entry is 'module:attr', "
                                    f"got {target!r}")
        else:
            self._check(name, target)
        if name in self._entries and self._entries[name] != target:
            raise RegistryError(f"{self.kind} '{name}' is registered twice "
                                f"({self._entries[name]!r} and {target!r}).")
        if name in self._aliases:
            raise RegistryError(f"{self.kind} '{name}' is already an alias of "
                                f"'{self._aliases[name]}'.")
        self._entries[name] = target
        for alias in aliases:
            if alias in self._entries or self._aliases.get(alias, name) != name:
                raise RegistryError(f"{self.kind} alias '{alias}' of '{name}' is taken.")
            self._aliases[alias] = name

    def canonical(self, name: str) -> str:
        """The entry's own name for ``name`` (itself, or what the alias points to)."""
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        options = self.names() + sorted(self._aliases)
        raise RegistryError(f"Unknown {self.kind} '{name}'.{did_you_mean(name, options)} "
                            f"Available: {', '.join(self.names())}.")

    def get(self, name: str) -> T:
        """Return the object for ``name`` (or an alias), importing a lazy entry on first use."""
        key = self.canonical(name)
        entry = self._entries[key]
        if not isinstance(entry, str):
            return entry
        module_name, _, attr = entry.partition(LAZY_SEPARATOR)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if (exc.name or "") == "somabench" or (exc.name or "").startswith("somabench."):
                raise  # our own code is broken: not a missing optional dependency
            raise ImportError(
                f"{self.kind} '{key}' needs an optional dependency that is not installed "
                f"({exc}). The extras and what they install: pyproject.toml [project.optional-dependencies]; "
                f"routellm and kvpress: docs/baselines.md; vllm and llama.cpp: docs/models.md."
            ) from exc
        if not hasattr(module, attr):
            raise RegistryError(f"{self.kind} '{key}' points at {entry}, but {module_name} "
                                f"has no '{attr}'.")
        resolved = self._check(key, getattr(module, attr))
        self._entries[key] = resolved
        return resolved

    def names(self) -> list[str]:
        """Entry names (aliases not included), sorted."""
        return sorted(self._entries)

    def aliases(self) -> dict[str, str]:
        """alias -> entry name."""
        return dict(self._aliases)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class JudgePanel(Protocol):
    """``judge=<name>``: judge a run dir and return the panel's objective (None: nothing)."""

    def __call__(self, cfg: Any, run_dir: str | Path,
                 reference_dir: str | Path | None = None) -> float | None: ...


JudgeKind = Callable[..., "Judge"]
"""``(name, spec, panel_cfg, cache, cache_dir) -> Judge``."""
DatasetLoader = Callable[[Mapping[str, Any]], "list[Dialogue]"]
"""Reads the dialogues of a resolved ``dataset`` config."""
HubConverter = Callable[..., dict[str, Any]]
"""``convert(row, *, index, dataset, options) -> dict`` in the bundled line schema."""

methods: Registry[type[Method]] = Registry("method", base="somabench.methods:Method")
"""``method=<name>``: ``Method`` subclasses (``conf/method/<name>.yaml``)."""
backends: Registry[type[BackendBase]] = Registry("backend", base="somabench.backends.base:BackendBase")
"""``model.<role>.backend=<name>``: ``BackendBase`` subclasses."""
dataset_loaders: Registry[DatasetLoader] = Registry("dataset loader", factories=True)
"""``dataset.loader=<name>``: functions that read dialogues (``conf/dataset/*.yaml`` pick one)."""
hub_converters: Registry[HubConverter] = Registry("hub converter", factories=True)
"""``dataset.hub.converter=<name>``: hub row -> bundled line (``somabench.data.hub``)."""
judge_panels: Registry[JudgePanel] = Registry("judge panel", factories=True)
"""``judge=<name>``: judge panels (``conf/judge/<name>.yaml``), each ``(cfg, run_dir) ->
objective``. Named apart from the ``somabench.judges`` package and the ``judge`` command."""
judge_kinds: Registry[JudgeKind] = Registry("judge kind", factories=True)
"""A panel entry's ``kind``: factories ``(name, spec, panel_cfg, cache, cache_dir) -> Judge``."""
datasets = dataset_loaders  # the data layer's name for it

ALL: dict[str, Registry[Any]] = {
    "method": methods, "backend": backends, "dataset_loader": dataset_loaders,
    "hub_converter": hub_converters, "judge": judge_panels, "judge_kind": judge_kinds}
"""Registries by the word ``python -m somabench ls <kind>`` takes (``judge`` = what
``judge=`` accepts: the panels)."""


def load_builtin() -> None:
    """Import the packages whose tables fill the registries (idempotent, cheap: the entries
    are lazy)."""
    for module in (
        "somabench.backends",
        "somabench.data",
        "somabench.methods",
        "somabench.baselines",
        "somabench.soma",
        "somabench.judges",
    ):
        importlib.import_module(module)
