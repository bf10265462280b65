"""Per-session LoRA through vLLM: adapters trained in torch/peft (switching/adapter.py SessionAdapter) on
the hf G, saved, then served by ONE vLLM engine running G with one ``LoRARequest`` per dialogue.

Two dialogues teach G two different answers to the same question, so an adapter that leaked
into the other dialogue's requests would show in the text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="needs vLLM: make vllm-env, then make test-vllm")
pytestmark = pytest.mark.vllm

from somabench.backends.base import GenerationConfig  # noqa: E402

GEN = GenerationConfig(max_new_tokens=12)
QUESTION = "What is your favorite color?"
PARAPHRASE = "Which color do you like best?"
OTHER = "Tell me your favourite colour."
TEACH = {"A": "My favorite color is teal, always teal.",
         "B": "I love crimson above all other colors."}
# Enough steps at a high learning rate that each dialogue's G reliably says its own answer
# (12 steps of both pairs); no Eq. 4 cosine weight, no early stopping: this tests serving.
LORA_SETTINGS = {"lr": 0.005, "lr_schedule": "constant", "epochs": 12, "max_steps": 12,
                 "examples_per_step": 2, "cos_alpha": 0.0, "early_stop_gap": None,
                 "max_seq_tokens": 128}


def lora_node(cfg: Any) -> Any:
    """conf/method/soma.yaml's lora node with the settings above (keys it does not have are
    left alone, so the test follows switching/lora.py's config as it evolves)."""
    from omegaconf import open_dict

    node = cfg.method.lora
    with open_dict(node):
        for key, value in LORA_SETTINGS.items():
            if key in node:
                node[key] = value
        if "early_stopping" in node and "threshold" in node.early_stopping:
            node.early_stopping.threshold = None
    return node


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def trained(hf_g: Any, engine: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train dialogue A's then B's adapter on the hf G; while each is attached, record the hf
    G+LoRA answers and serve it through the SessionAdapterServer (export -> LoRARequest)."""
    from somabench.config import compose
    from somabench.encoder import build_encoder
    from somabench.switching.adapter import SessionAdapter
    from somabench.switching.lora import LoraConfig, make_example
    from somabench.switching.vllm_serving import SessionAdapterServer

    cfg = compose(["model=tiny", "method=soma"])
    lora_cfg = LoraConfig.from_cfg(lora_node(cfg))
    encoder = build_encoder(cfg.model.encoder)
    server = SessionAdapterServer(engine, tmp_path_factory.mktemp("adapters"))
    base = {q: hf_g.chat(user(q), GEN).text for q in (QUESTION, OTHER)}
    out: dict[str, Any] = {"server": server, "base": base, "hf": {}, "ids": {}, "served": {}}
    import torch

    for name, answer in TEACH.items():
        torch.manual_seed(0)
        adapter = SessionAdapter(hf_g, lora_cfg)
        adapter.attach()
        try:
            examples = [make_example(hf_g, user(q), answer, 1.0, "warm", t, lora_cfg.max_seq_tokens)
                        for t, q in enumerate((QUESTION, PARAPHRASE))]
            adapter.train(examples, encoder)
            adapter_id = adapter.adapter_id
            out["ids"][name] = adapter_id
            out["hf"][name] = {q: hf_g.chat(user(q), GEN).text for q in (QUESTION, OTHER)}
            view = server.backend_for(adapter, adapter_id)  # exported while the adapter lives
            out["served"][name] = view.chat(user(QUESTION), GEN)
        finally:
            adapter.release()
    return out


def test_adapters_are_trained_saved_and_registered(trained: dict[str, Any], engine: Any) -> None:
    ids = trained["ids"]
    assert ids["A"] != ids["B"] and all(i.startswith("lora-") for i in ids.values())
    for adapter_id in ids.values():
        path = Path(engine.adapters[adapter_id])
        assert (path / "adapter_config.json").is_file()
        assert (path / "adapter_model.safetensors").is_file()
    # Each dialogue's hf G+LoRA learnt its own answer (the premise of the mixing test).
    assert "teal" in trained["hf"]["A"][QUESTION].lower()
    assert "crimson" in trained["hf"]["B"][QUESTION].lower()
    assert trained["base"][QUESTION] != trained["hf"]["A"][QUESTION]


def test_vllm_lora_matches_the_hf_lora_path(trained: dict[str, Any]) -> None:
    for name in TEACH:
        served = trained["served"][name]
        assert served.meta["adapter"] == trained["ids"][name]
        assert served.text == trained["hf"][name][QUESTION], (name, served.text, trained["hf"][name])


def test_two_dialogues_one_engine_adapters_never_mix(trained: dict[str, Any], engine: Any) -> None:
    a, b = trained["ids"]["A"], trained["ids"]["B"]
    prompts = [engine.render(user(q)) for q in (QUESTION, QUESTION, QUESTION, OTHER, OTHER)]
    outs = engine.generate_text(prompts, GEN, adapters=[a, b, None, b, a])  # one mixed batch
    texts = [o.text for o in outs]
    assert texts[0] == trained["hf"]["A"][QUESTION]
    assert texts[1] == trained["hf"]["B"][QUESTION]
    assert texts[2] == trained["base"][QUESTION]  # no adapter: the base model
    assert texts[3] == trained["hf"]["B"][OTHER]
    assert texts[4] == trained["hf"]["A"][OTHER]
    assert [o.meta["adapter"] for o in outs] == [a, b, None, b, a]


def test_adapter_views_have_their_own_cache_keys(trained: dict[str, Any], engine: Any,
                                                 tmp_path: Path) -> None:
    from somabench.cache import CachedBackend, SqliteCache, cache_key

    cache = SqliteCache(tmp_path / "requests.sqlite")
    views = {n: CachedBackend(engine.with_adapter(i), cache) for n, i in trained["ids"].items()}
    keys = {n: cache_key(v.key_components(user(QUESTION), GEN)) for n, v in views.items()}
    base_key = cache_key(CachedBackend(engine, cache).key_components(user(QUESTION), GEN))
    assert len({keys["A"], keys["B"], base_key}) == 3
    first = views["A"].chat(user(QUESTION), GEN)
    assert views["B"].chat(user(QUESTION), GEN).cached is False  # B never gets A's answer
    assert views["A"].chat(user(QUESTION), GEN).cached is True and first.cached is False


def test_the_switched_turn_hook_serves_the_session_adapter(trained: dict[str, Any], hf_g: Any,
                                                           tmp_path: Path) -> None:
    """``serve_switched_turn`` (called by SwitchingMethod for post-switch G turns when
    ``model.G_serve`` is set) answers with the dialogue's adapter, and ``release_session`` frees
    the engine slot and the exported copy."""
    from types import SimpleNamespace

    from somabench.config import compose
    from somabench.methods import Session, TurnPlan
    from somabench.switching.vllm_serving import SERVER_KEY, release_session, serve_switched_turn

    server = trained["server"]
    cfg = compose(["model=tiny", "method=soma", "+model/G_serve=vllm"])
    ctx = SimpleNamespace(cfg=cfg, cache=None, raw=lambda role: hf_g,
                          shared=lambda key, build=None: server if key == SERVER_KEY else None)
    session = Session(dialogue=None, history_mode="own")
    adapter_a = SimpleNamespace(adapter_id=trained["ids"]["A"])  # already exported above
    plan = TurnPlan(role="G", messages=user(QUESTION))
    out = serve_switched_turn(ctx, session, plan, GEN, adapter_a)
    assert out.text == trained["hf"]["A"][QUESTION]
    assert plan.extra["g_serve"] == {"engine": f"vllm ({server.engine.device})", "adapter_id": trained["ids"]["A"]}
    assert session.state["g_serve_adapter"] == trained["ids"]["A"]
    path = Path(server.engine.adapters[trained["ids"]["A"]])
    release_session(ctx, session)
    assert trained["ids"]["A"] not in server.engine.adapters and not path.exists()
    # Without model.G_serve the hook is a no-op: the runner's own G serves the turn.
    plain = SimpleNamespace(cfg=compose(["model=tiny", "method=soma"]))
    assert serve_switched_turn(plain, session, plan, GEN, adapter_a) is None
