"""FakeBackend: deterministic, labelled, whitespace token counts (control-flow tests only); a
test double in the ``testing`` namespace that run.json records and reports flag."""

from __future__ import annotations

import pytest

from somabench.backends import build_backend
from somabench.backends.base import Backend, BackendError, GenerationConfig
from somabench.cache import CachedBackend, SqliteCache
from somabench.registry import RegistryError, backends
from somabench.testing.fake import FakeBackend

GEN = GenerationConfig(max_new_tokens=5)
MSG = [{"role": "user", "content": "hello there"}]


def test_registered_in_the_testing_namespace_and_speaks_the_protocol() -> None:
    assert backends.get("testing.fake") is FakeBackend
    backend = build_backend("G", {"backend": "testing.fake", "model_id": "fake-g"})
    assert isinstance(backend, Backend) and backend.kind == "testing.fake"
    assert "test_double" in backend.describe()
    with pytest.raises(RegistryError, match="Unknown backend 'fake'"):
        backends.get("fake")  # the bare name is gone: a double is always named as one


def test_deterministic_and_prompt_dependent() -> None:
    a, b = FakeBackend(), FakeBackend()
    assert a.chat(MSG, GEN).text == b.chat(MSG, GEN).text
    other = a.chat([{"role": "user", "content": "something else"}], GEN).text
    assert other != a.chat(MSG, GEN).text
    assert FakeBackend(model_id="other").chat(MSG, GEN).text != a.chat(MSG, GEN).text


def test_labelled_and_counted_by_whitespace() -> None:
    out = FakeBackend().chat(MSG, GEN)
    assert out.text.split()[0] == "fake" and out.meta["fake"] is True
    assert out.completion_tokens == len(out.text.split()) == GEN.max_new_tokens
    assert out.prompt_tokens == len(out.rendered_prompt.split())
    assert out.finish_reason == "length"


def test_stop_strings_cut_the_reply() -> None:
    backend = FakeBackend()
    full = backend.chat(MSG, GEN).text
    stop = full.split()[2]
    out = backend.chat(MSG, GenerationConfig(max_new_tokens=5, stop=(stop,)))
    assert out.text == full[: full.index(stop)] and out.finish_reason == "stop"


def test_fail_marker_raises_backend_error() -> None:
    backend = FakeBackend(fail_marker="BOOM")
    with pytest.raises(BackendError, match="fail marker"):
        backend.chat([{"role": "user", "content": "x BOOM y"}], GEN)
    assert backend.calls == 0


def test_cache_serves_reruns(tmp_path) -> None:
    inner = FakeBackend()
    cached = CachedBackend(inner, SqliteCache(tmp_path / "c.sqlite"))
    first = cached.chat_batch([MSG, MSG], GEN)
    again = cached.chat_batch([MSG], GEN)
    assert inner.calls == 2 and again[0].cached and again[0].text == first[0].text


def test_longer_limit_extends_the_same_reply() -> None:
    short = FakeBackend().chat(MSG, GEN).text
    longer = FakeBackend().chat(MSG, GenerationConfig(max_new_tokens=9)).text
    assert longer.startswith(short) and len(longer.split()) == 9


def test_a_run_on_the_fake_backend_is_recorded_and_flagged_in_the_report(tmp_path, capsys) -> None:
    """run.json lists the double under test_doubles; the report's first note and its CLI say so."""
    import json

    from somabench.commands.report import main as report_main
    from somabench.config import compose
    from somabench.task import run_dir_of, run_task

    cfg = compose(["method=original", "model.F.backend=testing.fake", "model.F.asset=null",
                   "model.G.backend=testing.fake", "model.G.asset=null", "judge=none", "limit=1",
                   "dataset.truncate_turns=2", "progress=false", "cache.enabled=false",
                   f"paths.output_root={tmp_path / 'outputs'}"])
    run_task(cfg)
    header = json.loads((run_dir_of(cfg) / "run.json").read_text())
    assert header["test_doubles"] == ["F: testing.fake backend (hashed words, not a model)"]
    assert report_main([str(tmp_path / "outputs"), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "WARNING: TEST DOUBLE: " in printed and "used test double(s) F: testing.fake" in printed
    index = (tmp_path / "report" / "README.md").read_text()
    assert "TEST DOUBLE: " in index


def test_real_runs_have_no_test_doubles() -> None:
    from somabench.testing import run_doubles

    assert run_doubles({"models": {"F": {"engine": "hf"}}, "test_doubles": [],
                        "config": {"model": {"F": {"backend": "hf"}}}}) == []
    # a run killed before its models were recorded is still caught by its config
    assert run_doubles({"config": {"model": {"G": {"backend": "testing.fake"}}}}) == \
        ["G: testing.fake"]


def test_an_openai_backend_answered_by_the_scripted_server_says_so() -> None:
    """The scripted server is the other double: a backend it answered reports it (-> run.json
    test_doubles -> report warning); one it never answered does not."""
    from tests.helpers.servers import openai_backend_for, serve_in_thread

    from somabench.testing import doubles_in
    from somabench.testing.scripted import Behavior

    with serve_in_thread(script=[Behavior.reply("ok")]) as server:
        backend = openai_backend_for(server)
        assert "test_double" not in backend.describe()
        backend.chat(MSG, GEN)
        info = backend.describe()
    assert info["test_double"].startswith("scripted server at http://127.0.0.1:")
    assert doubles_in({"G": info}) == [f"G: {info['test_double']}"]
