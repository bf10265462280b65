"""RouteLLM (Ong et al., 2024; paper App. B.3): a router sends each turn to F (strong) or G (weak).

Why a baseline: per-query routing is the main alternative to switching once per dialogue. The
``routellm`` library's routers score a query with the "strong model win rate"; a turn goes to F
when the score is >= a threshold (``routellm.routers.routers.Router.route``). As in RouteLLM
(``routellm/calibrate_threshold.py``), the threshold is the ``1 - strong_share`` quantile of
the router's scores on a calibration sample, so that about ``strong_share`` of queries reach F.

Methods:

* ``routellm`` -- the paper's setup: RouteLLM's released matrix-factorization router
  (``mf``, checkpoint ``routellm/mf_gpt4_augmented``; it embeds prompts with OpenAI
  ``text-embedding-3-small``), calibrated on RouteLLM's published Chatbot Arena scores
  (``calibration.source: arena``). Needs the hub and ``OPENAI_API_KEY``.
* ``routellm_offline_random`` -- runs with local resources only: RouteLLM's own ``random``
  router through the same interface, calibrated on the dataset's user turns. It measures what
  routing at a given F share costs and keeps, with no query understanding; never reported as
  the paper's router.

How routellm is reached: ``routellm.controller.Controller`` builds the routers when it can be
imported; it imports ``litellm`` at module level, and litellm pins ``openai<3`` and
``huggingface_hub<2`` (it would downgrade this stack), so the ``routellm`` extra installs
routellm without it and the routers are then built from ``routellm.routers.routers.ROUTER_CLS``
-- the exact classes the Controller instantiates; the record's ``extra.routellm_entry`` says
which path ran. Either way the score comes from the router's ``calculate_strong_win_rate`` and
the decision is RouteLLM's rule ``score >= threshold``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from somabench.config import to_dict
from somabench.methods import Method, MethodContext, Role, Session, TurnPlan
from somabench.records import Usage

log = logging.getLogger(__name__)

# Routers RouteLLM released trained checkpoints for (routellm/routers/routers.py, README):
# the paper "adopts the released router", so only these may run under the name ``routellm``.
RELEASED_ROUTERS = ("mf", "sw_ranking", "bert", "causal_llm")
# routellm's published per-router scores on Chatbot Arena prompts (routellm/calibrate_threshold.py).
ARENA_THRESHOLDS_DATASET = "routellm/lmsys-arena-human-preference-55k-thresholds"
# Routers that embed prompts with OpenAI at scoring time (routellm/routers/routers.py).
OPENAI_ROUTERS = ("mf", "sw_ranking")
# OpenAI embedding model routellm's mf / sw_ranking routers call per prompt (routellm/routers/
# routers.py, similarity_weighted/utils.py); its tokenizer is tiktoken's cl100k_base.
EMBEDDING_ENCODING = "cl100k_base"
NO_MODEL_ROUTERS = ("random",)  # routers that score without any model call (nothing to count)
# routellm.routers.similarity_weighted.utils builds ``OpenAI()`` at import, which raises without
# a key; this stand-in is set only for the import (and only when no key is set), never sent.
IMPORT_PLACEHOLDER_KEY = "somabench-placeholder-not-a-key"


@contextlib.contextmanager
def _routellm_import_env(needs_openai: bool, key_env: str) -> Iterator[None]:
    """Environment routellm needs at import time, restored afterwards."""
    added = []
    if key_env not in os.environ:
        if needs_openai:
            raise RuntimeError(
                f"this router embeds prompts with OpenAI: set {key_env} (method.api_key_env), "
                "or run the offline stand-in method=routellm_offline_random")
        os.environ[key_env] = IMPORT_PLACEHOLDER_KEY
        added.append(key_env)
    if key_env != "OPENAI_API_KEY" and "OPENAI_API_KEY" not in os.environ:
        os.environ["OPENAI_API_KEY"] = os.environ[key_env]
        added.append("OPENAI_API_KEY")
    # litellm (only present with the full routellm install) fetches a price list unless told.
    if "LITELLM_LOCAL_MODEL_COST_MAP" not in os.environ:
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        added.append("LITELLM_LOCAL_MODEL_COST_MAP")
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def load_router(router: str, router_config: dict[str, Any], needs_openai: bool,
                key_env: str) -> tuple[Any, str]:
    """routellm's router instance and the entry used (``controller`` or ``routers``)."""
    with _routellm_import_env(needs_openai, key_env):
        try:
            from routellm.controller import Controller
        except ImportError as exc:
            if "litellm" not in str(exc):
                raise
            from routellm.routers.routers import ROUTER_CLS

            if router not in ROUTER_CLS:
                raise ValueError(f"method.router={router!r}; routellm routers: "
                                 f"{sorted(ROUTER_CLS)}") from None
            return ROUTER_CLS[router](**router_config), "routers"
        controller = Controller(routers=[router], strong_model="F", weak_model="G",
                                config={router: router_config})
        return controller.routers[router], "controller"


def calibrate_threshold(scores: list[float], strong_share: float) -> float:
    """RouteLLM's calibration: the (1 - strong_share) quantile of router scores (pandas'
    default linear interpolation, as ``Series.quantile`` in routellm/calibrate_threshold.py)."""
    if not scores:
        raise ValueError("router calibration needs at least one score")
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - strong_share))


class RouteLLM(Method):
    """Each turn: score the query with a routellm router, F if score >= threshold, else G."""

    name = "routellm"
    batchable = True
    needs_reference = False
    router_label = "RouteLLM"
    allowed_routers: tuple[str, ...] = RELEASED_ROUTERS
    """Routers this method name may run; keeps labels honest both ways (the paper's name never
    runs the random router, the stand-in's name never runs a released one)."""
    stand_in = "routellm_offline_random"

    @classmethod
    def label_problem(cls, cfg: Any) -> str | None:
        """Why ``cfg`` (a ``method`` config) must not carry this method's name, or None.
        Used at construction (an error) and by the report (a relabelled row)."""
        router = str(cfg.get("router"))
        if router not in cls.allowed_routers:
            other = "routellm" if cls.name != "routellm" else cls.stand_in
            return (f"method={cls.name} runs routellm's {list(cls.allowed_routers)} router(s); "
                    f"method.router={router!r} must run under method={other} so tables never "
                    f"mislabel it")
        return None

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)  # also refuses a config that must not carry this name
        if cfg.route_on not in ("last_user", "conversation"):
            raise ValueError(f"method.route_on={cfg.route_on!r}; one of last_user, conversation")
        share = float(cfg.calibration.strong_share)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"method.calibration.strong_share={share}; must be in [0, 1]")
        self._router: Any = None
        self.entry: str | None = None
        self.threshold: float | None = None
        self.calibration: dict[str, Any] = {}

    # -- router and calibration ---------------------------------------------------------------
    @property
    def router(self) -> Any:
        if self._router is None:
            started = time.perf_counter()
            config = to_dict(self.cfg.router_config) or {}
            self._router, self.entry = load_router(
                str(self.cfg.router), config, str(self.cfg.router) in OPENAI_ROUTERS,
                str(self.cfg.api_key_env))
            log.info("routellm router %r loaded via %s in %.1fs", self.cfg.router, self.entry,
                     time.perf_counter() - started)
        return self._router

    def score(self, prompt: str, key: str) -> float:
        """The router's strong-model win rate; Python's RNG is seeded per query so routellm's
        random router is reproducible (and resumable) turn by turn."""
        random.seed(f"{self.cfg.seed}:{key}")
        return float(self.router.calculate_strong_win_rate(prompt))

    def calibration_prompts(self) -> list[str]:
        """User turns of ``calibration.n_dialogues`` dialogues of the run's dataset."""
        from somabench.data import load_dialogues

        ccfg = self.cfg.calibration
        dialogues = load_dialogues(self.ctx.cfg.dataset, limit=ccfg.n_dialogues,
                                   seed=int(ccfg.seed))
        return [turn.user for d in dialogues for turn in d.turns]

    def calibrate(self) -> float:
        """Set the threshold once per run (fixed, dataset sample, or RouteLLM's arena scores)."""
        if self.threshold is not None:
            return self.threshold
        ccfg = self.cfg.calibration
        share = float(ccfg.strong_share)
        started = time.perf_counter()
        info: dict[str, Any] = {"source": str(ccfg.source), "strong_share_target": share,
                                "router": str(self.cfg.router)}
        if ccfg.source == "fixed":
            threshold = float(ccfg.threshold)
        elif ccfg.source == "dataset":
            prompts = self.calibration_prompts()
            scores = [self.score(p, f"calibration:{i}") for i, p in enumerate(prompts)]
            threshold = calibrate_threshold(scores, share)
            info.update(n=len(scores), dataset=str(self.ctx.cfg.dataset.name),
                        share_at_threshold=float(np.mean(np.asarray(scores) >= threshold)),
                        score_mean=float(np.mean(scores)))
        elif ccfg.source == "arena":
            from datasets import load_dataset

            scores_df = load_dataset(ARENA_THRESHOLDS_DATASET, split="train").to_pandas()
            threshold = float(scores_df[str(self.cfg.router)].quantile(q=1.0 - share))
            info.update(n=len(scores_df), dataset=ARENA_THRESHOLDS_DATASET)
        else:
            raise ValueError(f"method.calibration.source={ccfg.source!r}; one of dataset, "
                             "arena, fixed")
        if not 0.0 <= threshold <= 1.0:  # routellm's Controller rejects these too
            raise ValueError(f"router threshold {threshold} outside [0, 1]")
        info.update(threshold=threshold, seconds=round(time.perf_counter() - started, 6),
                    routellm_entry=self.entry or "unloaded")
        self.threshold, self.calibration = threshold, info
        log.info("routellm %s: threshold %.5f for %.0f%% F calls (%s)", self.cfg.router,
                 threshold, 100 * share, info)
        return threshold

    # -- the Method protocol --------------------------------------------------------------------
    def start(self, session: Session) -> None:
        self.calibrate()
        session.adaptation["router_calibration"] = dict(self.calibration)

    def plan(self, session: Session, turn: int) -> TurnPlan:
        messages = session.full_messages(turn)
        if self.cfg.route_on == "last_user":  # routellm's Controller routes on the last turn
            prompt = session.user(turn)
        else:
            prompt = "\n\n".join(m["content"] for m in messages)
        started = time.perf_counter()
        score = self.score(prompt, f"{session.id}:{turn}")
        seconds = time.perf_counter() - started
        threshold = self.calibrate()  # set by start(); calibrate() returns it without work
        role: Role = "F" if score >= threshold else "G"  # routellm Router.route's rule
        plan = TurnPlan(role=role, messages=messages)
        plan.seconds["route"] = round(seconds, 6)
        usage = self.router_usage(prompt)
        if usage is not None:
            plan.tokens["router"] = usage
        plan.extra = {"router": str(self.cfg.router), "router_label": self.router_label,
                      "router_score": round(score, 6), "threshold": round(threshold, 6),
                      "strong_share_target": float(self.cfg.calibration.strong_share),
                      "choice": role, "routellm_entry": self.entry}
        plan.extra["router_tokens"] = ("none: this router calls no model" if usage is None else
                                       "missing: not countable" if usage.prompt is None else
                                       self._counted_by)
        plan.context = {"history_turns": turn}
        return plan

    _counted_by = ""

    def router_usage(self, prompt: str) -> Usage | None:
        """Tokens the router's own model call processed: the OpenAI embedding call of mf /
        sw_ranking (counted with its tokenizer, tiktoken cl100k_base), the router model's
        tokenizer for bert / causal_llm; None for routers that call no model; a missing count
        (``Usage(None, None)``), never 0, when it cannot be counted."""
        router = str(self.cfg.router)
        if router in NO_MODEL_ROUTERS:
            return None
        if router in OPENAI_ROUTERS:
            encoding = self._embedding_encoding()
            if encoding is None:
                return Usage(None, None)
            self._counted_by = f"OpenAI embedding call, tiktoken {EMBEDDING_ENCODING}"
            return Usage(prompt=len(encoding.encode(prompt)), completion=None)
        tokenizer = getattr(self.router, "tokenizer", None)
        if tokenizer is None:
            return Usage(None, None)
        self._counted_by = "the router model's tokenizer"
        return Usage(prompt=len(tokenizer(prompt, add_special_tokens=True)["input_ids"]), completion=None)

    _encoding: Any
    """tiktoken's encoding of the router's embedding model (None: not countable here)."""

    def _embedding_encoding(self) -> Any:
        if not hasattr(self, "_encoding"):
            try:
                import tiktoken

                from somabench.baselines.llmlingua2 import ensure_tiktoken_offline

                ensure_tiktoken_offline(self.ctx.cfg.paths.cache_dir)
                self._encoding = tiktoken.get_encoding(EMBEDDING_ENCODING)
            except Exception as exc:  # noqa: BLE001 - the count is then recorded as missing
                log.warning("router embedding tokens not countable (%s); recorded as missing", exc)
                self._encoding = None
        return self._encoding


class RouteLLMOfflineRandom(RouteLLM):
    """Offline stand-in: routellm's ``random`` router (no query understanding)."""

    name = "routellm_offline_random"
    router_label = "RouteLLM random router (offline stand-in)"
    allowed_routers = ("random",)
