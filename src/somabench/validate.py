"""Every method, judge and dataset value checked against an explicit schema before any work.

Why here and not in the classes that read the values: SOMA reads ``method.mining.steps`` only
after F has generated the Original's answers, so a typo'd value cost minutes of compute before
failing. :func:`validate` runs at the start of ``run_task`` and in ``somabench plan``; a bad
value is one :class:`~somabench.errors.ConfigError` naming the key and what it accepts.

Why an explicit schema (rules by dotted path) rather than Hydra structured configs: the config
groups mix ``auto``-or-number values (``switch.gate.threshold``), ``null``-or-number knobs and
interpolations across groups, and a method's keys depend on the method (SOMA's ``lora.rank`` vs
History-FT's ``lora.r``). Dataclass schemas would need one class per method variant plus
``Union`` types OmegaConf does not support; a rule table checks the *composed* config the run
will see, keeps the YAML files as they are, and a test (tests/test_validate.py) fails when a
knob in conf/method, conf/judge or conf/dataset has no rule.

Enum values are written out here (importing soma or baselines would import torch);
tests/test_validate.py checks them against the constants the code uses.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from somabench.errors import ConfigError

GROUPS = ("method", "judge", "dataset")
"""The config groups checked (``cfg.<group>``)."""
AUTO = "auto"
WILDCARD = "*"


# -- rules -------------------------------------------------------------------------------------
class Rule(ABC):
    """What one config value may be; ``problem`` returns None when ``value`` is fine."""

    @abstractmethod
    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else what is expected (``an integer >= 1``)."""

    subtree = False
    """True: the rule covers a whole mapping (its keys are not checked one by one)."""


@dataclass(frozen=True)
class Num(Rule):
    """A number (``integer=True``: an int) in a range; ``null`` and ``words`` (e.g. ``auto``)
    are allowed alternatives."""

    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    lo_open: bool = False
    hi_open: bool = False
    null: bool = False
    words: tuple[str, ...] = ()

    def allowed(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.lo is not None and self.hi is not None:
            text = (f"{kind} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                    f"{')' if self.hi_open else ']'}")
        elif self.lo is not None:
            text = f"{kind} {'>' if self.lo_open else '>='} {self.lo:g}"
        elif self.hi is not None:
            text = f"{kind} {'<' if self.hi_open else '<='} {self.hi:g}"
        else:
            text = kind
        extra = list(self.words) + (["null"] if self.null else [])
        return text + (f" or {' or '.join(extra)}" if extra else "")

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None if self.null else self.allowed()
        if isinstance(value, str):
            return None if value in self.words else self.allowed()
        if isinstance(value, bool) or not isinstance(value, int | float):
            return self.allowed()
        if self.integer and not isinstance(value, int):
            return self.allowed()
        if isinstance(value, float) and math.isnan(value):
            return self.allowed()
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return self.allowed()
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return self.allowed()
        return None


def Int(lo: float | None = None, hi: float | None = None, **kw: Any) -> Num:  # noqa: N802
    """An integer rule (a constructor, named like the type it describes)."""
    return Num(lo, hi, integer=True, **kw)


@dataclass(frozen=True)
class OneOf(Rule):
    """One of fixed values (``null`` allowed when ``null``)."""

    values: tuple[Any, ...]
    null: bool = False

    def problem(self, value: Any) -> str | None:
        if value is None and self.null:
            return None
        if value in self.values and not isinstance(value, bool):
            return None
        return _one_of(value, [str(v) for v in self.values] + (["null"] if self.null else []))


def _one_of(value: Any, options: list[str]) -> str:
    """``one of a, b.`` plus the registry's did-you-mean hint for a near miss."""
    from somabench.registry import did_you_mean

    return f"one of {', '.join(options)}." + did_you_mean(str(value), options)


@dataclass(frozen=True)
class Flag(Rule):
    """true or false."""

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else "true or false"


@dataclass(frozen=True)
class Text(Rule):
    """Free text (a model id, a path, a template); ``null`` allowed when ``null``."""

    null: bool = False

    def problem(self, value: Any) -> str | None:
        if isinstance(value, str) or (value is None and self.null):
            return None
        return "a string" + (" or null" if self.null else "")


@dataclass(frozen=True)
class TextList(Rule):
    """A list of strings (``null`` allowed when ``null``; ``choices`` restricts the items)."""

    null: bool = False
    choices: tuple[str, ...] = ()

    def problem(self, value: Any) -> str | None:
        if value is None and self.null:
            return None
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        if ok and (not self.choices or all(v in self.choices for v in value)):
            return None
        items = f" from {', '.join(self.choices)}" if self.choices else " of strings"
        return f"a list{items}" + (" or null" if self.null else "")


@dataclass(frozen=True)
class Names(Rule):
    """A key of a registry (``somabench ls <kind>`` lists them)."""

    kind: str
    null: bool = False

    def problem(self, value: Any) -> str | None:
        from somabench.registry import ALL, load_builtin

        if value is None and self.null:
            return None
        load_builtin()
        names = ALL[self.kind].names()
        return None if value in names else _one_of(value, names + (["null"] if self.null else []))


@dataclass(frozen=True)
class Section(Rule):
    """null, or a mapping whose keys have rules of their own (``dataset.hub``)."""

    def problem(self, value: Any) -> str | None:
        return None if value is None or isinstance(value, Mapping) else "null or a mapping"


@dataclass(frozen=True)
class Free(Rule):
    """Anything: pass-through keyword arguments of a library (``router_config``, ``extra_body``)
    or a subtree checked elsewhere (the judge's copy of the dataset)."""

    subtree = True

    def problem(self, value: Any) -> str | None:
        return None


@dataclass(frozen=True)
class Device(Rule):
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (``null`` allowed when ``null``)."""

    null: bool = False

    def problem(self, value: Any) -> str | None:
        if value is None and self.null:
            return None
        if isinstance(value, str) and (value in ("cpu", "cuda", "mps", AUTO) or (
                value.startswith("cuda:") and value[5:].isdigit())):
            return None
        return "cpu, cuda, cuda:N, mps or auto" + (" or null" if self.null else "")


# -- the schema --------------------------------------------------------------------------------
PROB = Num(0, 1)
POSITIVE = Num(0, lo_open=True)
NONNEG = Num(0)
COUNT = Int(1)
COUNT0 = Int(0)
SCHEDULES = OneOf(("cosine", "constant"))
BATCHING = OneOf(("padded", "accumulate"))
DTYPES = ("auto", "bfloat16", "bf16", "float32", "fp32", "float16", "fp16")
KV_PRESSES = ("streaming_llm", "snapkv", "expected_attention", "knorm")
MINED_INPUTS = ("soft", "verbalized", "plain")
LORA_METRICS = ("gap", "nll")
GATE_FALLBACKS = ("max_null", "max_threshold")
BATCH_SOURCES = ("future_turns", "mined_holdout")
CALIBRATION_SOURCES = ("arena", "dataset", "fixed")
ROUTERS = ("mf", "sw_ranking", "bert", "causal_llm", "random")
ROUTE_ON = ("last_user", "conversation")
HISTORY_SOURCES = ("reference", "session")
DATASET_FORMATS = ("auto", "turns", "messages", "sharegpt")
ON_UNCONVERTIBLE = ("error", "drop")
ROLES = ("F", "G")

LORA_TRAINING: dict[str, Rule] = {
    "lr": POSITIVE, "lr_schedule": SCHEDULES, "weight_decay": NONNEG, "grad_clip": POSITIVE,
    "max_steps": COUNT, "examples_per_step": COUNT, "batching": BATCHING,
    "gap_max_new_tokens": COUNT, "dropout": Num(0, 1, hi_open=True), "alpha": POSITIVE,
    "target_modules": TextList(),
}

METHOD: dict[str, Rule] = {
    "name": Names("method"),
    # the shared switch (conf/method/switch/default.yaml)
    "switch.warm_window": Int(1, words=(AUTO,)),
    "switch.expected_turns": Int(1, null=True, words=("oracle",)),
    "switch.require_payoff": Flag(),
    "switch.gate.threshold": Num(-1, 1, words=(AUTO,)),
    "switch.gate.false_switch_rate": Num(0, 1, lo_open=True, hi_open=True),
    "switch.gate.per_hit_rate": Num(0, 1, lo_open=True, hi_open=True, words=(AUTO,)),
    "switch.gate.consecutive_hits": COUNT,
    "switch.gate.fallback": OneOf(GATE_FALLBACKS),
    "switch.gate.min_threshold": Num(-1, 1),
    "switch.gate.max_threshold": Num(-1, 1),
    "switch.gate.locality": Flag(),
    "switch.acceptance.enabled": Flag(),
    "switch.acceptance.required": Flag(),
    "switch.acceptance.epsilon": POSITIVE,
    "switch.acceptance.delta": Num(0, 1, lo_open=True, hi_open=True),
    "switch.acceptance.sigma_delta": Num(0, words=(AUTO,)),
    "switch.acceptance.sigma_prior": NONNEG,
    "switch.acceptance.b": POSITIVE,
    "switch.acceptance.batch": Int(1, words=(AUTO,)),
    "switch.acceptance.min_batch": COUNT,
    "switch.acceptance.max_batch": COUNT,
    "switch.acceptance.batch_source": OneOf(BATCH_SOURCES),
    "switch.acceptance.max_failed_tests": Int(1, null=True),
    "switch.acceptance.positive_control": Flag(),
    "switch.drift.enabled": Flag(),
    "switch.drift.window": COUNT,
    "switch.drift.threshold": Num(-1, 1),
    "switch.drift.recheck_turns": COUNT,
    "switch.drift.recheck_drop": NONNEG,
    "switch.drift.max_rollbacks": Int(0, null=True),
    # SOMA (conf/method/soma.yaml)
    "theory.delta": Num(0, 1, lo_open=True, hi_open=True),
    "theory.theta": Num(0, math.pi / 2, lo_open=True),
    "theory.r_act": COUNT,
    "theory.eta": POSITIVE,
    "theory.epsilon": POSITIVE,
    "theory.sigma_delta": NONNEG,
    "theory.b": POSITIVE,
    "soft_prompt.length": COUNT,
    "soft_prompt.init_std": POSITIVE,
    "soft_prompt.n_candidates": Int(1, words=(AUTO,)),
    "neighbors.k": COUNT,
    "neighbors.store_k": COUNT,
    "neighbors.block_rows": COUNT,
    "mining.steps": COUNT,
    "mining.turns_per_step": COUNT,
    "mining.lr": POSITIVE,
    "mining.lr_schedule": SCHEDULES,
    "mining.weight_decay": NONNEG,
    "mining.grad_clip": POSITIVE,
    "mining.tau": POSITIVE,
    "mining.top_m": COUNT,
    "mining.lambda_exp": NONNEG,
    "mining.beta": NONNEG,
    "mining.tail_k": COUNT,
    "mining.lambda_p": NONNEG,
    "mining.max_context_tokens": COUNT,
    "mining.max_answer_tokens": COUNT,
    "mined_queries.max_new_tokens": Int(1, null=True),
    "mined_queries.separator": Text(),
    **{f"lora.{k}": v for k, v in LORA_TRAINING.items()},
    "lora.rank": COUNT,
    "lora.r": COUNT,
    "lora.cos_alpha": NONNEG,
    "lora.epochs": Int(1, null=True),
    "lora.early_stopping.metric": OneOf(LORA_METRICS),
    "lora.early_stopping.holdout_turns": COUNT0,
    "lora.early_stopping.min_train_turns": COUNT,
    "lora.early_stopping.eval_every": COUNT,
    "lora.early_stopping.patience": COUNT,
    "lora.early_stopping.threshold": Num(0, null=True),
    "lora.max_seq_tokens": COUNT,
    "lora.mined_input": OneOf(MINED_INPUTS),
    "lora.hardness.min_weight": NONNEG,
    "lora.hardness.max_weight": POSITIVE,
    "adapter_cache.enabled": Flag(),
    "adapter_cache.path": Text(null=True),
    "summary.budget_tokens": COUNT,
    "summary.verbatim_turns": COUNT0,
    "summary.w_relevance": Num(),
    "summary.w_representative": Num(),
    "summary.w_redundancy": Num(),
    "summary.min_sentence_chars": COUNT0,
    "summary.include_user": Flag(),
    "summary.include_assistant": Flag(),
    "summary.header": Text(),
    "summary.separator": Text(),
    # History-FT (conf/method/history_ft.yaml)
    **{f"train.{k}": v for k, v in LORA_TRAINING.items() if k not in ("dropout", "alpha",
                                                                         "target_modules")},
    "train.metric": OneOf(LORA_METRICS),
    "train.eval_every": COUNT,
    "train.patience": COUNT,
    "train.holdout": COUNT0,
    "train.max_length": COUNT,
    "train.seed": Int(),
    # LLMLingua (conf/method/llmlingua*.yaml)
    "history_source": OneOf(HISTORY_SOURCES),
    "count_tokens_with": TextList(choices=ROLES),
    "compressor.model_id": Text(),
    "compressor.asset": Text(null=True),
    "compressor.path": Text(null=True),
    "compressor.use_llmlingua2": Flag(),
    "compressor.device": Device(),
    "compressor.dtype": OneOf(DTYPES, null=True),
    "compressor.trust_remote_code": Flag(),
    "compressor.llmlingua2_config": Free(),
    "compress.rate": Num(0, 1, lo_open=True),
    "compress.iterative_size": COUNT,
    "compress.use_context_level_filter": Flag(),
    "compress.context_budget": Text(),
    "compress.force_tokens": TextList(),
    "prompt.turn_template": Text(),
    "prompt.history_template": Text(),
    # RouteLLM (conf/method/routellm*.yaml)
    "router": OneOf(ROUTERS),
    "router_config": Free(),
    "api_key_env": Text(null=True),
    "route_on": OneOf(ROUTE_ON),
    "seed": Int(),
    "calibration.source": OneOf(CALIBRATION_SOURCES),
    "calibration.strong_share": PROB,
    "calibration.n_dialogues": Int(1, null=True),
    "calibration.seed": Int(),
    "calibration.threshold": Num(0, 1, null=True),
    # the Original's variants (model_overrides merged onto model.<role>)
    "model_overrides.*.kv_press.name": OneOf(KV_PRESSES),
    "model_overrides.*.kv_press.compression_ratio": Num(0, 1, hi_open=True),
    "model_overrides.*.prefix_cache": Flag(),
    "model_overrides.*.prefix_cache_entries": COUNT,
}
"""``cfg.method`` rules: dotted paths below ``method``; ``*`` is one path segment."""

JUDGE: dict[str, Rule] = {
    "name": Names("judge"),
    "label": Text(),
    "prompts": TextList(),
    "objective": Text(),  # a metric the prompts produce (similarity, accuracy, ...)
    "prompt_settings": Section(),
    "prompt_settings.*": Section(),  # per prompt kind (similarity, ability, answer)
    "prompt_settings.*.context_turns": Int(0, null=True),
    "prompt_settings.*.max_tokens": COUNT,
    "prompt_settings.*.stop": TextList(),
    "parse_retries": COUNT0,
    "timeout": POSITIVE,
    "max_retries": COUNT0,
    "backoff_initial": NONNEG,
    "backoff_max": NONNEG,
    "backoff_jitter": Num(0, 1),
    "concurrency": COUNT,
    "preflight": Flag(),
    "preflight_timeout": POSITIVE,
    "abort_after_consecutive_errors": COUNT,
    "fail_on_error": PROB,
    "store_messages": Flag(),
    "cache.enabled": Flag(),
    "cache.path": Text(null=True),
    "judges.*.kind": Names("judge_kind"),
    "judges.*.model": Text(),
    "judges.*.base_url": Text(null=True),
    "judges.*.api_key_env": Text(null=True),
    "judges.*.max_tokens": COUNT,
    "judges.*.extra_body": Free(),
    "judges.*.asset": Text(null=True),
    "judges.*.path": Text(null=True),
    "judges.*.device": Device(),
    "judges.*.dtype": OneOf(DTYPES),
    "judges.*.batch_size": COUNT,
    "judges.*.dataset": Free(),  # the run's dataset, checked under ``dataset``
    "judges.*.decimal_gold_rounding": Flag(),
    "judges.*.sympy_timeout": POSITIVE,
    "judges.*.last_number_fallback": Flag(),
}
"""``cfg.judge`` rules."""

DATASET: dict[str, Rule] = {
    "name": Text(),
    "loader": Names("dataset_loader"),
    "format": OneOf(DATASET_FORMATS),
    "file": Text(null=True),
    "tiny": Flag(),
    "path": Text(null=True),
    "hub": Section(),  # null, or the mapping below
    "hub.path": Text(null=True),
    "hub.name": Text(null=True),
    "hub.split": Text(),
    "hub.data_files": Free(),  # a file, a list or a split -> files mapping (datasets' argument)
    "hub.revision": Text(null=True),
    "hub.converter": Names("hub_converter"),
    "hub.on_unconvertible": OneOf(ON_UNCONVERTIBLE),
    "hub.license": Text(null=True),
    "hub.options": Free(),  # the converter's keyword arguments
    "min_turns": Int(1, null=True),
    "max_turns": Int(1, null=True),
    "truncate_turns": Int(1, null=True),
    "truncate_chars": Int(1, null=True),
    "tasks": TextList(null=True),
    "sample": Int(1, null=True),
    "gold_answers": Text(null=True),
    "context_dependent_only": Flag(),
    "context_dependent_tasks": TextList(null=True),
    "negative_control_tasks": TextList(),
}
"""``cfg.dataset`` rules."""

SCHEMA: dict[str, dict[str, Rule]] = {"method": METHOD, "judge": JUDGE, "dataset": DATASET}


# -- checking ----------------------------------------------------------------------------------
def _matches(pattern: str, path: str) -> bool:
    want, have = pattern.split("."), path.split(".")
    return len(want) == len(have) and all(w in (WILDCARD, h) for w, h in zip(want, have,
                                                                                strict=True))


def rule_for(group: str, path: str) -> Rule | None:
    """The rule of ``<group>.<path>`` (exact paths win over ``*`` patterns), or None."""
    rules = SCHEMA[group]
    if path in rules:
        return rules[path]
    return next((r for p, r in rules.items() if WILDCARD in p and _matches(p, path)), None)


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every value below ``node``; a non-empty mapping is descended,
    an empty one is a value (``options: {}``)."""
    if isinstance(node, Mapping) and node:
        for key, value in node.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def walk(group: str, node: Any, prefix: str = "") -> Iterator[tuple[str, Any, Rule | None]]:
    """(path, value, rule) below ``node``; a subtree rule (or a rule on a mapping's own path,
    e.g. ``hub`` = null) stops the descent."""
    if prefix:
        rule = rule_for(group, prefix)
        if rule is not None and (rule.subtree or not isinstance(node, Mapping) or not node):
            yield prefix, node, rule
            return
    if isinstance(node, Mapping) and node:
        for key, value in node.items():
            yield from walk(group, value, f"{prefix}.{key}" if prefix else str(key))
    elif prefix:
        yield prefix, node, None


def _consistency(group: str, values: Mapping[str, Any]) -> list[str]:
    """Checks across keys (each message names both keys)."""
    out = []

    def pair(low: str, high: str) -> None:
        a, b = values.get(low), values.get(high)
        if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) \
                and not isinstance(b, bool) and a > b:
            out.append(f"{group}.{low}={a} must be <= {group}.{high}={b}")

    if group == "method":
        pair("switch.acceptance.min_batch", "switch.acceptance.max_batch")
        pair("switch.gate.min_threshold", "switch.gate.max_threshold")
        pair("neighbors.k", "neighbors.store_k")
        pair("lora.hardness.min_weight", "lora.hardness.max_weight")
    elif group == "judge":
        pair("backoff_initial", "backoff_max")
    elif group == "dataset":
        pair("min_turns", "max_turns")
    return out


def problems(cfg: Any) -> list[str]:
    """Every bad value of ``cfg.method``, ``cfg.judge`` and ``cfg.dataset``, one message each
    (``method.mining.steps=-3: expected an integer >= 1``). Keys without a rule pass (a
    ``+key=`` the user added on purpose); tests/test_validate.py keeps conf/ covered."""
    from omegaconf import DictConfig, OmegaConf

    out: list[str] = []
    for group in GROUPS:
        node = cfg.get(group) if hasattr(cfg, "get") else None
        if node is None:
            continue
        data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        if not isinstance(data, Mapping):
            continue
        raw = dict(leaves(OmegaConf.to_container(node, resolve=False))) \
            if isinstance(node, DictConfig) else {}
        values: dict[str, Any] = {}
        for path, value, rule in walk(group, data):
            values[path] = value
            if rule is None or value == "???":  # ??? : a required value, Hydra reports it
                continue
            if str(raw.get(path, "")).startswith("${."):  # a copy of a sibling: reported there
                continue
            problem = rule.problem(value)
            if problem is not None:
                out.append(f"{group}.{path}={_show(value)}: expected {problem}")
        out.extend(_consistency(group, values))
    return out


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(
        value) if isinstance(value, str) else str(value)


def validate(cfg: Any) -> None:
    """Raise one :class:`ConfigError` listing every bad value (before any model loads)."""
    found = problems(cfg)
    if found:
        raise ConfigError("; ".join(found))


__all__ = ["SCHEMA", "problems", "rule_for", "validate", "walk"]
