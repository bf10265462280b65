"""original_prefix_cache end to end on the tiny family: the Original's answers, fewer prompt
tokens computed (the rest read from F's prefix cache), the same prompt tokens sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from somabench.config import compose
from somabench.errors import ConfigError
from somabench.records import load_dialogues, load_turns
from somabench.task import run_task


def overrides(method: str, tmp_path: Path) -> list[str]:
    return [f"method={method}", "model=tiny", "dataset=mathmt", "limit=2",
            "dataset.truncate_turns=3", "generation.max_new_tokens=8", "judge=none",
            "progress=false", f"paths.output_root={tmp_path / 'outputs'}",
            f"cache.path={tmp_path / 'cache' / 'requests.sqlite'}"]


def run(method: str, tmp_path: Path):  # noqa: ANN201
    cfg = compose(overrides(method, tmp_path))
    run_task(cfg)
    run_dir = Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name
    turns = {(t.dialogue_id, t.turn): t for t in load_turns(run_dir)}
    return turns, load_dialogues(run_dir)


@pytest.mark.slow
def test_same_answers_as_the_original_with_fewer_prompt_tokens_computed(tmp_path: Path) -> None:
    plain, plain_dlg = run("original", tmp_path)
    cached, cached_dlg = run("original_prefix_cache", tmp_path)
    assert set(cached) == set(plain) and len(plain) == sum(d.n_turns for d in plain_dlg)
    assert any(turn > 0 for _, turn in plain)  # some turn has a history to reuse
    assert not any(t.cached for t in cached.values())  # not answered from the request cache
    for key, turn in plain.items():
        other = cached[key]
        assert other.response == turn.response, key
        assert other.method == "original_prefix_cache"
        assert other.tokens["F"].prompt == turn.tokens["F"].prompt  # tokens sent: unchanged
        assert turn.tokens["F"].cached_prompt == 0  # the plain Original prefills everything
        assert other.tokens["F"].cached_prompt < other.tokens["F"].prompt
        if key[1] > 0:  # a later turn reads at least the earlier turn's prompt from the cache
            earlier = cached[(key[0], key[1] - 1)].tokens["F"].prompt
            assert other.tokens["F"].cached_prompt >= earlier
    # a first turn shares at most the chat template's header (system prompt) with others
    assert min(t.tokens["F"].cached_prompt for (_, n), t in cached.items() if n == 0) == 0
    computed = sum(d.tokens["F"].computed_prompt for d in cached_dlg)
    assert computed < sum(d.tokens["F"].computed_prompt for d in plain_dlg)
    assert sum(d.tokens["F"].prompt for d in cached_dlg) == sum(d.tokens["F"].prompt for d in plain_dlg)


def test_refuses_to_run_without_the_prefix_cache(tmp_path: Path) -> None:
    from somabench.baselines.original import OriginalPrefixCache

    cfg = compose([*overrides("original_prefix_cache", tmp_path),
                   "method.model_overrides.F.prefix_cache=false"])
    with pytest.raises(ConfigError, match="prefix_cache"):
        OriginalPrefixCache(cfg.method, None)


def test_model_overrides_reach_the_backend_spec(tmp_path: Path) -> None:
    from somabench.runner import RunContext

    ctx = RunContext(compose(overrides("original_prefix_cache", tmp_path)))
    assert ctx.model_spec("F")["prefix_cache"] is True
    assert "prefix_cache" not in ctx.model_spec("G")
    plain = RunContext(compose(overrides("original", tmp_path)))
    assert "prefix_cache" not in plain.model_spec("F")
