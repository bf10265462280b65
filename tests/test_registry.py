"""Registry rules: decorator registration, duplicates, did-you-mean, lazy entries."""

from __future__ import annotations

import pytest

from somabench.registry import Registry, RegistryError


def test_register_get_and_unknown_name_hint() -> None:
    reg: Registry = Registry("widget")

    @reg.register("history_prefix")
    class A:
        pass

    assert reg.get("history_prefix") is A
    with pytest.raises(RegistryError) as info:
        reg.get("history_prefx")
    assert "Did you mean 'history_prefix'" in str(info.value)
    assert "Available: history_prefix" in str(info.value)


def test_duplicate_name_is_an_error() -> None:
    reg: Registry = Registry("widget")
    reg.register("a", object())
    with pytest.raises(RegistryError):
        reg.register("a", object())


def test_lazy_entry_imports_on_first_use() -> None:
    reg: Registry = Registry("widget")
    reg.register("od", "collections:OrderedDict")
    import collections

    assert reg.get("od") is collections.OrderedDict


def test_lazy_entry_missing_dependency_is_explained() -> None:
    reg: Registry = Registry("widget")
    reg.register("ghost", "somabench_no_such_module:Thing")
    with pytest.raises(ImportError, match="optional dependency"):
        reg.get("ghost")
