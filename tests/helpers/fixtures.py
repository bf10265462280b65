"""Session fixtures over the real tiny SmolLM2 model and a server in front of it.

Registered for the whole suite by ``pytest_plugins`` in ``tests/conftest.py``, so every test
directory can request ``smollm2_path``, ``smollm2_bf16``, ``smollm2_fp32`` or
``smollm2_server`` without loading the model twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SMOLLM2_ASSET = "smollm2-135m-instruct"
SMOLLM2_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # as in conf/model/tiny.yaml
# torch CPU threads for these fixtures. On a shared 2-core machine, 2 threads competing with other
# processes made an 8-token SmolLM2 generation 15-20x slower than 1 thread (measured 30-42 s vs
# 1.6-2.6 s at load ~13). Note: torch.set_num_threads is process-wide.
TEST_TORCH_THREADS = int(os.environ.get("SOMABENCH_TEST_THREADS", "1"))


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from somabench import assets

    return assets.resolve(SMOLLM2_ASSET)


def load_smollm2(path: Path, dtype: str) -> Any:
    from somabench.backends.hf import HFBackend

    return HFBackend(model_id=SMOLLM2_MODEL_ID, path=str(path), dtype=dtype,
                     num_threads=TEST_TORCH_THREADS)


@pytest.fixture(scope="session")
def smollm2_bf16(smollm2_path: Path) -> Any:
    """The real tiny G model (bfloat16, CPU) as an HFBackend."""
    return load_smollm2(smollm2_path, "bfloat16")


@pytest.fixture(scope="session")
def smollm2_fp32(smollm2_path: Path) -> Any:
    """The real tiny G model in float32 (exact batching comparisons)."""
    return load_smollm2(smollm2_path, "float32")


@pytest.fixture(scope="module")
def smollm2_server(smollm2_bf16: Any) -> Iterator[Any]:
    """A loopback OpenAI-compatible server serving ``smollm2_bf16`` (model id = its model_id).

    One per test module (bounded lifetime); assert on differences of ``server.stats()`` counts.
    """
    from tests.helpers.servers import serve_in_thread

    with serve_in_thread(backend=smollm2_bf16) as server:
        yield server
