"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, ``somabench.serve``...).

Why: F (or a judge) may run elsewhere; the harness only needs ``chat(messages, gen)``. The
``openai`` client does the HTTP; its own retries are off so that *our* loop decides what is
retried (429, 408/409, 5xx, timeouts, connection errors), how long to wait (exponential backoff,
honouring ``Retry-After`` up to ``backoff_max``) and how the final failure reads: a
:class:`~somabench.backends.base.BackendError` naming the endpoint, the model and the fix.

The exact prompt string is rendered *server-side* by the endpoint's chat template, so
``render()`` returns a canonical JSON of the messages (what we sent), not the model's prompt.
Token counts come from the response ``usage``; a server that reports none gives ``None``.
``seconds`` is the wall time of the call including retries and waits; ``meta`` holds
``attempts``, ``request_seconds`` (the successful attempt), ``retries`` (one line per failed
attempt), ``served_model`` (the ``model`` the server answered with) and ``scripted`` when the
answer came from ``somabench.serve``'s script mode (never a real model).
"""

from __future__ import annotations

import dataclasses
import email.utils
import ipaddress
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from somabench.backends.base import (
    BackendBase,
    BackendError,
    Completion,
    GenerationConfig,
    Message,
    sha16,
)
from somabench.rundir import TEST_DOUBLE_KEY

log = logging.getLogger(__name__)

LOOPBACK_DUMMY_KEY = "somabench-loopback-no-key"  # sent to loopback servers that need no key
RETRYABLE_STATUS = frozenset({408, 409, 429})  # plus every 5xx; same set the openai client uses
BACKOFF_FACTOR = 2.0  # exponential backoff doubles the wait after each failed attempt
DEFAULT_BACKOFF_JITTER = 0.5
"""Share of each backoff wait drawn at random (0: none; 1: "full jitter", anywhere in [0, wait]):
parallel clients hit by the same outage then retry spread out instead of in lockstep."""
BODY_PREVIEW_CHARS = 200  # how much of a garbage body an error message quotes


def is_loopback_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _retry_after_seconds(headers: Any) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``Retry-After`` secs or date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend(BackendBase):
    """Chat completions from an OpenAI-compatible endpoint, with retries and a concurrency cap.

    Args:
        model_id: the ``model`` name the endpoint serves.
        base_url: the API root including ``/v1`` (e.g. ``http://127.0.0.1:8000/v1``).
        timeout: seconds per attempt (connect/read/write) before it counts as a timeout.
        max_retries: extra attempts after the first for retryable failures.
        backoff_initial, backoff_max: first wait and cap (seconds) of the exponential backoff;
            the cap also bounds a server's ``Retry-After``.
        backoff_jitter: share of each wait drawn at random, in [0, 1]: a wait w becomes
            uniform in [(1 - jitter) w, w] (a server's ``Retry-After`` stays the minimum).
        backoff_seed: seed of this client's jitter RNG (None: from the OS, so parallel clients
            differ; tests pin it).
        concurrency: most requests in flight at once from this backend (all threads).
        api_key_env: name of the environment variable holding the key; the key itself is never
            stored in configs, records or logs. Unset + loopback URL: a dummy key is sent.
        tokenizer: optional local tokenizer (directory or offline asset name) for
            ``count_tokens``; without it ``count_tokens`` returns ``None``.
        system_prompt: prepended as a system message when the messages have none.
        max_tokens_field: request field for the length limit (``max_tokens``, or
            ``max_completion_tokens`` for endpoints that require it).
        extra_body: extra request fields sent as is (provider reasoning controls such as
            OpenRouter's ``reasoning: {effort: low}``); judges set it per judge.
        stream: use the streaming API (vLLM, llama.cpp and OpenAI servers stream) so each
            answer records when its first and last tokens arrived (TTFT/TPOT,
            ``somabench.latency``); without it TTFT is unknown (never guessed).
    """

    kind = "openai"

    def __init__(
        self,
        model_id: str,
        base_url: str,
        *,
        timeout: float,
        max_retries: int,
        backoff_initial: float,
        backoff_max: float,
        concurrency: int,
        backoff_jitter: float = DEFAULT_BACKOFF_JITTER,
        backoff_seed: int | None = None,
        api_key_env: str | None = None,
        tokenizer: str | None = None,
        system_prompt: str | None = None,
        revision: str | None = None,
        max_tokens_field: str = "max_tokens",
        extra_body: dict[str, Any] | None = None,
        stream: bool = False,
        **_: Any,
    ) -> None:
        import openai

        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if not 0.0 <= float(backoff_jitter) <= 1.0:
            raise ValueError(f"backoff_jitter must be in [0, 1], got {backoff_jitter}")
        if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise ValueError("max_tokens_field must be 'max_tokens' or 'max_completion_tokens'")
        self.model_id = model_id
        self.base_url = base_url.rstrip("/")
        self.revision = revision
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.backoff_jitter = float(backoff_jitter)
        self._jitter_rng = random.Random(backoff_seed)  # per client: never in lockstep with others
        self.concurrency = int(concurrency)
        self.api_key_env = api_key_env
        self.system_prompt = system_prompt
        self.max_tokens_field = max_tokens_field
        self.extra_body = dict(extra_body or {})  # provider fields, e.g. reasoning controls
        self.stream = bool(stream)
        self._semaphore = threading.BoundedSemaphore(self.concurrency)
        self._client = openai.OpenAI(
            api_key=self._api_key(), base_url=self.base_url, timeout=self.timeout, max_retries=0
        )
        self.tokenizer_source = tokenizer
        self._tokenizer = _load_tokenizer(tokenizer) if tokenizer else None

    def _api_key(self) -> str:
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise BackendError(
                    f"the API key for {self.base_url} (model '{self.model_id}') is read from the "
                    f"environment variable {self.api_key_env}, which is not set. "
                    f"Fix: export {self.api_key_env}=<your key>.", reason="auth")
            return key
        if is_loopback_url(self.base_url):
            return LOOPBACK_DUMMY_KEY
        raise BackendError(
            f"{self.base_url} (model '{self.model_id}') is not a loopback endpoint and no "
            f"api_key_env is configured. Fix: set api_key_env to the name of the environment "
            f"variable holding the key (any non-empty value if the server needs none).",
            reason="auth")

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(model_id={self.model_id!r}, base_url={self.base_url!r})"

    # -- rendering and counting ---------------------------------------------------------------
    def render(self, messages: list[Message]) -> str:
        """Canonical JSON of the messages sent. The exact prompt string is rendered server-side
        by the endpoint's chat template and is not visible to the client."""
        return self.render_json(messages)

    def count_tokens(self, text: str) -> int | None:
        if self._tokenizer is None:
            return None
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def fingerprint(self) -> dict[str, Any]:
        fp = super().fingerprint()
        fp.update(base_url=self.base_url)
        return fp

    # -- generation ---------------------------------------------------------------------------
    def chat(self, messages: list[Message], gen: GenerationConfig) -> Completion:
        return self._request(messages, gen)

    def describe(self) -> dict[str, Any]:
        info = {**super().describe(), "stream": self.stream}
        if getattr(self, "scripted", False):  # the server labelled itself a test double
            info[TEST_DOUBLE_KEY] = f"scripted server at {self.base_url} (somabench.testing)"
        return info

    def chat_batch(self, batch: list[list[Message]], gen: GenerationConfig,
                   base_rows: Sequence[bool] | None = None) -> list[Completion]:
        """Send the batch concurrently (at most ``concurrency`` in flight). Each completion's
        ``seconds`` is the batch's wall time and ``batch_size`` its size (as for a batched local
        generate), with the request's own latency in ``meta['request_seconds']``. If any request
        fails for good, the first failure (in batch order) is raised after all have finished."""
        self.refuse_base_rows(base_rows)
        if len(batch) <= 1:
            return [self._request(m, gen) for m in batch]
        started = time.perf_counter()
        workers = min(self.concurrency, len(batch))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-backend") as pool:
            # token times count from the batch's start: waiting for a concurrency slot is queueing
            futures = [pool.submit(self._request, m, gen, started) for m in batch]
            outcomes: list[Completion | BaseException] = []
            for future in futures:
                try:
                    outcomes.append(future.result())
                except BaseException as exc:  # noqa: BLE001 - re-raised below after all finish
                    outcomes.append(exc)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        wall = time.perf_counter() - started
        return [
            dataclasses.replace(c, seconds=wall, batch_size=len(batch),
                                meta={**c.meta, "request_seconds": c.seconds})
            for c in outcomes
            if isinstance(c, Completion)
        ]

    def _payload(self, messages: list[Message], gen: GenerationConfig) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model_id,
            "messages": self.with_system(messages),
            self.max_tokens_field: gen.max_new_tokens,
        }
        if gen.do_sample:
            payload.update(temperature=gen.temperature, top_p=gen.top_p)
            if gen.seed is not None:
                payload["seed"] = gen.seed
        else:
            payload["temperature"] = 0.0
        if gen.stop:
            payload["stop"] = list(gen.stop)
        if self.extra_body:
            payload["extra_body"] = dict(self.extra_body)
        if self.stream:
            payload.update(stream=True, stream_options={"include_usage": True})
        return payload

    def _request(self, messages: list[Message], gen: GenerationConfig,
                 origin: float | None = None) -> Completion:
        """One request with retries; ``origin`` is the clock's zero for token times (default:
        this call's start)."""
        payload = self._payload(messages, gen)
        failures: list[str] = []
        started = time.perf_counter()
        origin = started if origin is None else origin
        last_reason = "error"
        for attempt in range(self.max_retries + 1):
            try:
                with self._semaphore:
                    t0 = time.perf_counter()
                    raw = self._client.chat.completions.with_raw_response.create(**payload)
                    streamed = self._consume(raw, origin) if self.stream else None
                    request_seconds = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 - classified below
                reason, retryable, detail, wait_hint = self._classify(exc)
                failures.append(f"attempt {attempt + 1}: {detail}")
                last_reason = reason
                if not retryable:
                    raise BackendError(self._message(reason, failures), reason=reason,
                                       attempts=failures) from exc
                if attempt == self.max_retries:
                    break
                wait = self._wait_seconds(attempt, wait_hint)
                log.warning("%s model %s: %s; retry %d/%d in %.2fs", self.base_url, self.model_id,
                            detail, attempt + 1, self.max_retries, wait)
                time.sleep(wait)
                continue
            completion = (self._parse(raw, messages, failures) if streamed is None
                          else self._completion(messages, raw.http_response, **streamed))
            completion.seconds = time.perf_counter() - started
            completion.meta.update(attempts=attempt + 1, request_seconds=request_seconds)
            if failures:
                completion.meta["retries"] = list(failures)
            return completion
        raise BackendError(self._message(last_reason, failures), reason=last_reason,
                           attempts=failures)

    def _wait_seconds(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff capped at ``backoff_max``, then jittered (the cap first: clients
        that all reached the cap would otherwise wait exactly as long); a server's
        ``Retry-After`` (capped too) is the least we wait."""
        wait = min(self.backoff_initial * (BACKOFF_FACTOR ** attempt), self.backoff_max)
        wait *= 1.0 - self.backoff_jitter * self._jitter_rng.random()
        if retry_after is not None:
            if retry_after > self.backoff_max:
                log.warning("%s asked to wait %.1fs (Retry-After); capped at backoff_max=%.1fs",
                            self.base_url, retry_after, self.backoff_max)
            wait = max(wait, min(retry_after, self.backoff_max))
        return wait

    def _classify(self, exc: Exception) -> tuple[str, bool, str, float | None]:
        """(reason, retryable, one-line detail, Retry-After seconds) for a failed attempt."""
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return "timeout", True, f"timed out after {self.timeout:g}s", None
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            return "connection", True, f"connection failed ({cause or exc})", None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = _error_message(exc)
            detail = f"HTTP {status}: {message}"
            retry_after = _retry_after_seconds(getattr(exc.response, "headers", None))
            if status == 429:
                return "rate_limit", True, detail, retry_after
            if status >= 500:
                return "server_error", True, detail, retry_after
            if status in RETRYABLE_STATUS:
                return "server_error", True, detail, retry_after
            if status in (401, 403):
                return "auth", False, detail, None
            if status == 404:
                return "not_found", False, detail, None
            return "bad_request", False, detail, None
        if isinstance(exc, openai.APIResponseValidationError):
            return "bad_response", False, f"invalid response: {exc}", None
        return "error", False, f"{type(exc).__name__}: {exc}", None

    def _message(self, reason: str, failures: list[str]) -> str:
        where = f"OpenAI-compatible endpoint {self.base_url} (model '{self.model_id}')"
        fixes = {
            "connection": f"no usable connection to {self.base_url}: check that the server "
                          f"is running (e.g. `python -m somabench serve --asset <asset> --port "
                          f"<port>`) and that base_url is right.",
            "timeout": f"every attempt exceeded timeout={self.timeout:g}s: raise the backend's "
                       f"timeout or reduce the load on the server.",
            "rate_limit": "the endpoint kept rate-limiting: lower concurrency, or raise "
                          "max_retries / backoff_max.",
            "server_error": "the server kept failing: check its log.",
            "bad_response": "the endpoint did not return an OpenAI chat completion: is base_url "
                            "the API root of an OpenAI-compatible server (usually ending in /v1)?",
            "auth": f"authentication failed: check the key in the environment variable "
                    f"{self.api_key_env or '(api_key_env not set)'}.",
            "not_found": f"model or route not found: check model_id against GET "
                         f"{self.base_url}/models and that base_url ends in /v1.",
            "bad_request": "the endpoint rejected the request: check the generation settings.",
        }
        tried = len(failures)
        return (f"{where} failed after {tried} attempt(s): {failures[-1] if failures else reason}. "
                f"Fix: {fixes.get(reason, 'see the error above.')}")

    def _parse(self, raw: Any, messages: list[Message], failures: list[str]) -> Completion:
        http = raw.http_response
        try:
            parsed = raw.parse()
            choice = parsed.choices[0]
            text = choice.message.content
            finish = choice.finish_reason
            served_model = parsed.model
            usage = parsed.usage
            timings = getattr(parsed, "timings", None)  # llama.cpp's extra field (cache_n)
        except Exception as exc:  # noqa: BLE001 - any shape error is a bad response
            body = _preview(http)
            failures.append(f"attempt {len(failures) + 1}: HTTP {http.status_code} body is not a "
                            f"chat completion ({type(exc).__name__}); body starts: {body!r}")
            raise BackendError(self._message("bad_response", failures), reason="bad_response",
                               attempts=failures) from exc
        return self._completion(messages, http, text=text, finish=finish,
                                served_model=served_model, usage=usage, timings=timings)

    def _consume(self, raw: Any, origin: float) -> dict[str, Any]:
        """Read a streamed answer, noting when its first and last content arrived (seconds
        since ``origin``). A stream that breaks off raises like a failed request (retried)."""
        parts: list[str] = []
        first = last = None
        finish = served_model = usage = timings = None
        for chunk in raw.parse():
            served_model = chunk.model or served_model
            usage = chunk.usage or usage
            timings = getattr(chunk, "timings", None) or timings
            for choice in chunk.choices or []:
                if choice.delta is not None and choice.delta.content:
                    last = time.perf_counter() - origin
                    first = last if first is None else first
                    parts.append(choice.delta.content)
                finish = choice.finish_reason or finish
        return {"text": "".join(parts), "finish": finish, "served_model": served_model,
                "usage": usage, "timings": timings, "first_token_s": first, "last_token_s": last}

    def _completion(self, messages: list[Message], http: Any, *, text: str | None,
                    finish: str | None, served_model: str | None, usage: Any,
                    timings: Any = None, first_token_s: float | None = None,
                    last_token_s: float | None = None) -> Completion:
        prompt_tokens = getattr(usage, "prompt_tokens", None) if usage is not None else None
        completion_tokens = getattr(usage, "completion_tokens", None) if usage is not None else None
        rendered = self.render(messages)
        meta: dict[str, Any] = {"prompt_hash": sha16(rendered), "served_model": served_model}
        if http.headers.get("x-somabench-scripted"):
            meta["scripted"] = True
            self.scripted = True  # describe() -> run.json test_doubles -> a report warning
        return Completion(
            text=text or "", prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            seconds=0.0, rendered_prompt=rendered, model_id=self.model_id,
            finish_reason=finish, meta=meta, first_token_s=first_token_s,
            last_token_s=last_token_s, cached_prompt_tokens=reported_cached_tokens(usage, timings),
        )


def reported_cached_tokens(usage: Any, timings: Any = None) -> int | None:
    """Prompt tokens the server read from its cache instead of prefilling, where it says:
    OpenAI's ``usage.prompt_tokens_details.cached_tokens`` (OpenAI, vLLM's server with
    ``--enable-prompt-tokens-details``, recent llama.cpp), else llama.cpp's ``timings.cache_n``.
    None when the server reports neither (unknown, not 0)."""
    details = getattr(usage, "prompt_tokens_details", None) if usage is not None else None
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    if cached is None and isinstance(timings, dict):
        cached = timings.get("cache_n")
    return int(cached) if cached is not None else None


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(getattr(exc, "message", exc))


def _preview(http: Any) -> str:
    try:
        return http.text[:BODY_PREVIEW_CHARS]
    except Exception:  # noqa: BLE001 - preview only
        return "<unreadable body>"


def _load_tokenizer(source: str) -> Any:
    """A local tokenizer from a directory or an offline asset name (never the HF hub)."""
    from transformers import AutoTokenizer

    path = Path(source).expanduser()
    if not path.is_dir():
        from somabench import assets

        if source not in assets.ASSETS:
            raise ValueError(
                f"tokenizer '{source}' is neither a local directory nor an offline asset "
                f"({', '.join(sorted(assets.ASSETS))})"
            )
        path = assets.resolve(source)
    return AutoTokenizer.from_pretrained(str(path))
