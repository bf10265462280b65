"""Named registries for methods, backends, datasets and judges.

Why: runner, records and reports never branch on a name; they look it up here. Heavy optional
dependencies (vllm, llmlingua, routellm) register lazily as ``"module:attr"`` strings so that
importing somabench never imports them.
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
    """A name -> object map with decorator registration, lazy entries and helpful errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

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
            self._entries[name] = resolved
            return resolved
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


methods: Registry[Any] = Registry("method")
backends: Registry[Any] = Registry("backend")
datasets: Registry[Any] = Registry("dataset")
judges: Registry[Any] = Registry("judge")

ALL = {"method": methods, "backend": backends, "dataset": datasets, "judge": judges}


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
