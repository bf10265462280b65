"""LLM judges: an OpenAI-compatible endpoint (``kind: llm``) or an in-process hf model
(``kind: local``), with a strict parser, parse retries, a sqlite cache and a circuit breaker.

Why this shape: the transport (HTTP with retries on 429/5xx/timeouts and backoff, or a local
``generate``) is a somabench backend, so a judge is exactly as robust as F's endpoint; what is
judge-specific lives here: the versioned prompt, the parser, the reminder sent after an
unreadable reply, the cache key (judge fingerprint + prompt id/hash + messages + decoding) and
the rule that a failure is a status, never a number. Decoding is greedy (temperature 0).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from typing import Any

from somabench.backends.base import BackendError, GenerationConfig
from somabench.cache import SqliteCache, cache_key
from somabench.judges.base import TRUNCATED_FINISH, Judge, JudgeError, JudgeItem, Verdict
from somabench.judges.parsing import parse_score
from somabench.judges.prompting import JudgePrompt
from somabench.records import (
    JUDGE_API_ERROR,
    JUDGE_FINAL,
    JUDGE_OK,
    JUDGE_TRUNCATED,
    JUDGE_UNPARSED,
)

log = logging.getLogger(__name__)

PREVIEW_CHARS = 200  # how much of an unreadable reply a retry entry quotes (raw keeps it all)
TRANSPORT_KEYS = ("timeout", "max_retries", "backoff_initial", "backoff_max", "concurrency",
                  "api_key_env", "max_tokens_field")


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


class ModelJudge(Judge):
    """A judge that asks a chat model (remote or local) and parses its reply.

    Args:
        name: the judge's key in the panel config.
        spec: the judge's config entry (``kind``, ``model``, and ``base_url``/``api_key_env``
            for ``llm`` or ``asset``/``path``/``dtype``/``device`` for ``local``).
        panel: panel-level knobs (transport defaults, ``parse_retries``,
            ``abort_after_consecutive_errors``, ``preflight_timeout``); the spec overrides them.
        cache: the judge cache (namespace ``judge``) or ``None``.
        cache_dir: where offline model assets live.
    """

    def __init__(self, name: str, spec: dict[str, Any], panel: dict[str, Any],
                 cache: SqliteCache | None, cache_dir: str | None = None) -> None:
        self.name = name
        self.spec = dict(spec)
        self.kind = "llm" if self.spec["kind"] == "llm" else "local"
        self.model = str(self.spec["model"])
        self.knobs: dict[str, Any] = {k: self.spec.get(k, panel.get(k)) for k in TRANSPORT_KEYS}
        self.concurrency = int(self.knobs["concurrency"] or 1) if self.kind == "llm" else 1
        self.parse_retries = int(panel["parse_retries"])
        # Per judge (reasoning models need room to think before the answer): a reply budget
        # that replaces prompt_settings.<kind>.max_tokens, and provider request fields such as
        # OpenRouter's ``reasoning: {effort: low}`` or vLLM's ``reasoning_effort`` (extra_body).
        self.max_tokens = self.spec.get("max_tokens")
        self.extra_body = dict(self.spec.get("extra_body") or {})
        abort_after = panel.get("abort_after_consecutive_errors")
        self.abort_after = int(abort_after) if abort_after is not None else None
        self.preflight_timeout = float(panel.get("preflight_timeout") or self.knobs["timeout"] or 0)
        self.cache = cache
        self.cache_dir = cache_dir
        self._backend: Any = None
        self._build_lock = threading.Lock()
        self._call_lock = threading.Lock()  # local models are not re-entrant
        self._state_lock = threading.Lock()
        self._consecutive_errors = 0
        self._last_error: str | None = None

    # -- construction --------------------------------------------------------------------------
    def endpoint(self) -> str | None:
        return str(self.spec["base_url"]).rstrip("/") if self.kind == "llm" else None

    @property
    def backend(self) -> Any:
        with self._build_lock:
            if self._backend is None:
                self._backend = self._build()
            return self._backend

    def _build(self) -> Any:
        if self.kind == "llm":
            from somabench.backends.openai_api import OpenAIBackend

            if not self.spec.get("base_url"):
                raise JudgeError(f"judge '{self.name}' has no base_url. Fix: "
                                 f"judge.judges.{self.name}.base_url=http://HOST:PORT/v1")
            try:
                return OpenAIBackend(
                    model_id=self.model, base_url=str(self.spec["base_url"]),
                    timeout=float(self.knobs["timeout"]),
                    max_retries=int(self.knobs["max_retries"]),
                    backoff_initial=float(self.knobs["backoff_initial"]),
                    backoff_max=float(self.knobs["backoff_max"]),
                    concurrency=self.concurrency, api_key_env=self.knobs["api_key_env"],
                    max_tokens_field=self.knobs["max_tokens_field"] or "max_tokens",
                    extra_body=self.extra_body or None,
                )
            except BackendError as exc:
                raise JudgeError(f"judge '{self.name}': {exc}") from exc
        from somabench.backends import build_backend

        spec = {"backend": "hf", "model_id": self.model}
        for key in ("asset", "path", "dtype", "device", "num_threads", "revision"):
            if self.spec.get(key) is not None:
                spec[key] = self.spec[key]
        return build_backend(f"judge:{self.name}", spec, cache_dir=self.cache_dir)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this judge's answers in the cache key (no transport knobs)."""
        if self.kind == "llm":
            fp: dict[str, Any] = {"kind": "llm", "model": self.model, "base_url": self.endpoint()}
            if self.extra_body:  # reasoning controls change the reply
                fp["extra_body"] = self.extra_body
            return fp
        # From the config, so a fully cached rerun never loads the model; ``dtype: auto`` is
        # resolved (a cached probe, no model load) so bf16 and fp32 verdicts never share a key.
        return {"kind": "local", "model": self.model, "asset": self.spec.get("asset"),
                "path": self.spec.get("path"), "dtype": self._resolved_dtype(),
                "revision": self.spec.get("revision")}

    def _resolved_dtype(self) -> str | None:
        requested = self.spec.get("dtype")
        if requested is None:
            return None
        from somabench import dtype as dtypes

        return dtypes.resolve(str(requested), str(self.spec.get("device") or "cpu"),
                              self.cache_dir).name

    # -- checks --------------------------------------------------------------------------------
    def preflight(self) -> None:
        if self.kind == "local":
            self._preflight_local()
        else:
            self._preflight_llm()

    def _preflight_local(self) -> None:
        path, asset = self.spec.get("path"), self.spec.get("asset")
        if path:
            if not os.path.isdir(str(path)):
                raise JudgeError(f"judge '{self.name}': model path {path} does not exist. Fix: "
                                 f"judge.judges.{self.name}.path=<hf model dir>")
            return
        if asset:
            from somabench import assets

            try:
                assets.resolve(str(asset), self.cache_dir, fetch_if_missing=False)
            except assets.AssetError as exc:
                raise JudgeError(f"judge '{self.name}': {exc}") from exc

    def _preflight_llm(self) -> None:
        import openai

        from somabench.backends.openai_api import LOOPBACK_DUMMY_KEY

        backend = self.backend  # raises a JudgeError for a missing key
        env = self.knobs["api_key_env"]
        key = os.environ.get(env) if env else LOOPBACK_DUMMY_KEY
        client = openai.OpenAI(api_key=key, base_url=backend.base_url,
                               timeout=self.preflight_timeout, max_retries=0)
        try:
            ids = [m.id for m in client.models.list()]
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise JudgeError(
                f"judge '{self.name}': cannot reach {backend.base_url} ({exc.__cause__ or exc}). "
                f"Fix: start the server (e.g. python -m somabench serve --asset "
                f"smollm2-135m-instruct --port 8000) or point the judge elsewhere with "
                f"judge.judges.{self.name}.base_url=http://HOST:PORT/v1. Nothing was judged."
            ) from exc
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403):
                raise JudgeError(f"judge '{self.name}': {backend.base_url} refused the key "
                                 f"(HTTP {exc.status_code}); check ${env}.") from exc
            log.warning("judge %s: GET %s/models answered HTTP %s; skipping the model check",
                        self.name, backend.base_url, exc.status_code)
            return
        finally:
            client.close()
        if ids and self.model not in ids:
            raise JudgeError(
                f"judge '{self.name}': model '{self.model}' is not served at {backend.base_url} "
                f"(it serves {ids[:10]}{' ...' if len(ids) > 10 else ''}). Fix: "
                f"judge.judges.{self.name}.model=<one of them>, or judge.preflight=false if the "
                f"endpoint does not list every model it serves."
            )

    # -- judging -------------------------------------------------------------------------------
    def _breaker_open(self) -> bool:
        with self._state_lock:
            return bool(self.abort_after) and self._consecutive_errors >= (self.abort_after or 0)

    def _note(self, ok: bool, error: str | None = None) -> None:
        with self._state_lock:
            if ok:
                self._consecutive_errors = 0
            else:
                self._consecutive_errors += 1
                self._last_error = error

    def _chat(self, messages: list[dict[str, str]], gen: GenerationConfig) -> Any:
        if self.kind == "llm":
            return self.backend.chat(messages, gen)
        with self._call_lock:
            return self.backend.chat(messages, gen)

    def request(self, item: JudgeItem, prompt: JudgePrompt,
                settings: dict[str, Any]) -> tuple[list[dict[str, str]], GenerationConfig, str]:
        """Messages, decoding settings and cache key of one judgment (no call is made)."""
        turns = settings.get("context_turns")
        context = item.context if turns is None else (
            item.context[-int(turns):] if int(turns) > 0 else [])
        messages = prompt.messages(question=item.question, reference=item.reference,
                                   candidate=item.candidate, context=context)
        gen = GenerationConfig(max_new_tokens=self.max_tokens_for(settings), do_sample=False,
                               temperature=0.0, stop=tuple(settings.get("stop") or ()))
        components = {"judge": self.fingerprint(), "prompt_id": prompt.id,
                      "prompt_sha": prompt.sha, "messages": messages, "gen": gen.cache_fields()}
        key = cache_key(components)
        log.debug("judge cache key %s <- %s %s", key[:12], components["judge"], prompt.id)
        return messages, gen, key

    def max_tokens_for(self, settings: dict[str, Any]) -> int:
        """The judge's own ``max_tokens`` if set (reasoning models), else the prompt kind's."""
        return int(self.max_tokens if self.max_tokens is not None else settings["max_tokens"])

    def request_key(self, item: JudgeItem, prompt: JudgePrompt, settings: dict[str, Any]) -> str:
        return self.request(item, prompt, settings)[2]

    def judge(self, item: JudgeItem, prompt: JudgePrompt, settings: dict[str, Any]) -> Verdict:
        messages, gen, key = self.request(item, prompt, settings)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and not self._stale(hit):
                return Verdict(**{**hit, "attempts": 0, "cached": True, "request_key": key,
                                  "messages": messages})
        if self._breaker_open():
            return Verdict(
                status=JUDGE_API_ERROR, request_key=key, messages=messages,
                error=(f"not attempted: judge '{self.name}' failed {self.abort_after} calls in a "
                       f"row (last: {self._last_error}); rerun to retry"))
        return self._ask(messages, gen, prompt, key)

    def _stale(self, hit: dict[str, Any]) -> bool:
        """A cached ``unparsed`` outcome is final only for the parse retries it was given:
        asked with fewer than the panel now allows, it is asked again."""
        if hit.get("status") != JUDGE_UNPARSED:
            return False
        made = hit.get("parse_retries")
        return made is None or int(made) < self.parse_retries

    def _ask(self, messages: list[dict[str, str]], gen: GenerationConfig, prompt: JudgePrompt,
             key: str) -> Verdict:
        conversation = list(messages)
        verdict = Verdict(status=JUDGE_UNPARSED, request_key=key, messages=messages,
                          parse_retries=self.parse_retries)
        started = time.perf_counter()
        for round_ in range(self.parse_retries + 1):
            try:
                completion = self._chat(conversation, gen)
            except BackendError as exc:
                verdict.attempts += max(len(exc.attempts), 1)
                verdict.retries.extend(exc.attempts)
                verdict.status, verdict.error = JUDGE_API_ERROR, str(exc)
                verdict.seconds = time.perf_counter() - started
                self._note(False, str(exc))
                return verdict
            except Exception as exc:  # noqa: BLE001 - a local model failure is data too
                verdict.attempts += 1
                verdict.status, verdict.error = JUDGE_API_ERROR, f"{type(exc).__name__}: {exc}"
                verdict.seconds = time.perf_counter() - started
                self._note(False, verdict.error)
                return verdict
            self._note(True)
            verdict.attempts += int(completion.meta.get("attempts", 1))
            verdict.retries.extend(completion.meta.get("retries", []))
            verdict.prompt_tokens = _add(verdict.prompt_tokens, completion.prompt_tokens)
            verdict.completion_tokens = _add(verdict.completion_tokens, completion.completion_tokens)
            verdict.raw = completion.text
            verdict.finish_reason = completion.finish_reason
            parsed = parse_score(completion.text, prompt.output_format, prompt.score_range)
            if parsed.ok:
                verdict.status, verdict.score, verdict.error = JUDGE_OK, parsed.score, None
                break
            verdict.error = f"unparsed: {parsed.reason}"
            if completion.finish_reason == TRUNCATED_FINISH:
                # Cut off by the token limit: its own status, never cached; a later run with a
                # larger budget (or reasoning controls) asks again.
                verdict.status = JUDGE_TRUNCATED
                verdict.error = (f"truncated: the reply hit max_tokens={gen.max_new_tokens} "
                                 f"(finish_reason {completion.finish_reason}) before a score "
                                 f"({parsed.reason}); raise judge.judges.<judge>.max_tokens or use "
                                 f"the provider's reasoning controls (extra_body)")
            else:
                verdict.status = JUDGE_UNPARSED
            if round_ < self.parse_retries:
                verdict.retries.append(f"attempt {verdict.attempts}: unparsed ({parsed.reason}): "
                                       f"{completion.text[:PREVIEW_CHARS]!r}")
                if prompt.reminder:
                    conversation = [*conversation, {"role": "assistant", "content": completion.text},
                                    {"role": "user", "content": prompt.reminder}]
        verdict.seconds = time.perf_counter() - started
        if self.cache is not None and verdict.status in JUDGE_FINAL:  # never truncated
            self.cache.put(key, verdict.cacheable())
        return verdict

    def close(self) -> None:
        """Drop the model (local judges run one after another to bound memory)."""
        with self._build_lock:
            backend, self._backend = self._backend, None
        if backend is not None and self.kind == "local":
            del backend
            gc.collect()


def build_llm_judge(name: str, spec: dict[str, Any], panel: dict[str, Any],
                    cache: SqliteCache | None, cache_dir: str | None = None) -> ModelJudge:
    """Registry factory for ``kind: llm`` and ``kind: local``."""
    if spec.get("kind") not in ("llm", "local"):
        raise JudgeError(f"judge '{name}': kind '{spec.get('kind')}' is not llm or local")
    return ModelJudge(name, spec, panel, cache, cache_dir)


__all__ = ["ModelJudge", "JudgeItem", "build_llm_judge"]
