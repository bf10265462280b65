"""A model family that cannot load here fails fast and says how to point F/G elsewhere."""

from __future__ import annotations

import pytest

from somabench.backends import ModelLoadError, build_backend
from somabench.config import compose


def test_llama_without_gpu_fails_fast_with_instructions() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the no-GPU error path does not apply")
    cfg = compose(["model=llama"])
    with pytest.raises(ModelLoadError) as info:
        build_backend("F", cfg.model.F)
    message = str(info.value)
    assert "needs a GPU" in message
    assert "model.F.backend=openai model.F.base_url=" in message
    assert "model.F.path=" in message


def test_hub_model_not_cached_offline_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose(["model=qwen", "model.G.requires_gpu=false", "model.G.device=cpu"])
    with pytest.raises(ModelLoadError) as info:
        build_backend("G", cfg.model.G)
    assert "Qwen/Qwen3-0.6B" in str(info.value) and "HF_HUB_OFFLINE" in str(info.value)
    assert "model.G.backend=openai" in str(info.value)


def test_unknown_asset_suggests_name() -> None:
    from somabench.assets import AssetError, resolve

    with pytest.raises(AssetError, match="Did you mean 'smollm2-135m-instruct'"):
        resolve("smollm2-135m-instruc")
