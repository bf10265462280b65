"""SOMA as a somabench method (paper Sec. 3-4): warm start, mining, LoRA, gate, summary, drift.

The per-dialogue state machine (switch logic shared with the baselines: ``somabench.switching``):

1. warm start: F serves turns 0..W-1 with the full history;
2. at turn W (``adapt``): mine M soft prompts on frozen G over the warm turns (mining.py),
   verbalize them and query F with V(P_m) (+) D_{t-1} (+) q_t (batched, cached), then train a
   per-dialogue LoRA on the local batch = warm pairs + mined pairs, hardness-weighted
   (switching/lora.py); the gate is calibrated on the warm window (switching/gate.py);
3. gate turns: F serves, G+LoRA answers with its serving context as the candidate;
4. after the switch: G+LoRA serves with the extractive summary + the last K turns verbatim
   (summary.py), never calling F, except one F turn per drift rollback (summary refreshed).

Ablations are config variants of this class: ``soma_wo_adl`` (beta = 0) and
``soma_wo_expw_adl`` (lambda_exp = 0, beta = 0).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from pathlib import Path
from typing import Any

import torch

from somabench.backends.base import GenerationConfig
from somabench.methods import MethodContext, Session
from somabench.records import Usage
from somabench.soma import theory
from somabench.soma.mining import MiningConfig, encode_turn, mine
from somabench.soma.neighbors import NeighborIndex, load_or_build
from somabench.soma.soft_prompt import with_prefix
from somabench.soma.summary import SummaryConfig, summarize
from somabench.switching.adapter_cache import AdapterCache, training_key
from somabench.switching.gate import AUTO
from somabench.switching.lora import Example, LoraConfig, lora_state, make_example
from somabench.switching.method import RESTORED_STATE, SwitchingMethod

log = logging.getLogger(__name__)

MINED_INPUTS = ("soft", "verbalized", "plain")


class Soma(SwitchingMethod):
    """SOMA (registered as ``soma`` and, with other configs, its ablations)."""

    name = "soma"

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        self.theory_values = theory.knobs(
            float(cfg.theory.delta), float(cfg.theory.theta), int(cfg.theory.r_act),
            float(cfg.theory.eta), float(cfg.theory.epsilon), float(cfg.theory.sigma_delta),
            float(cfg.theory.b))
        super().__init__(cfg, ctx)
        self.name = str(cfg.name)
        m = cfg.soft_prompt.n_candidates
        self.n_candidates = int(self.theory_values["M"]) if m == AUTO else int(m)
        self.mining_cfg = MiningConfig.from_cfg(cfg.soft_prompt, cfg.mining, self.n_candidates)
        self.lora_cfg = LoraConfig.from_cfg(cfg.lora)
        self.summary_cfg = SummaryConfig.from_cfg(cfg.summary)
        if cfg.lora.mined_input not in MINED_INPUTS:
            raise ValueError(f"method.lora.mined_input={cfg.lora.mined_input!r}; one of {MINED_INPUTS}")
        self._index: NeighborIndex | None = None

    def auto_warm_window(self) -> int | None:
        return int(self.theory_values["W_eff"])

    # -- shared resources -----------------------------------------------------------------------
    def _g(self) -> Any:
        g = self.ctx.raw("G")
        if g is self.ctx.raw("F"):
            raise RuntimeError("SOMA adapts G in place, but F and G are the same backend object "
                               "(identical model configs); give G a different model")
        if not hasattr(g, "embedding_matrix"):
            raise RuntimeError(f"SOMA needs white-box access to G (tokenizer, embeddings, LoRA); "
                               f"backend '{g.kind}' has none: use backend=hf for G")
        return g

    def neighbor_index(self) -> NeighborIndex:
        if self._index is None:
            g = self._g()
            nb = self.cfg.neighbors
            self._index = load_or_build(
                g.embedding_matrix(), max(int(nb.k), int(nb.store_k)), fingerprint=g.fingerprint(),
                cache_dir=self.ctx.cfg.paths.cache_dir, block_rows=int(nb.block_rows),
            ).take(int(nb.k))
        return self._index

    def _seed(self, session: Session) -> int:
        return (int(self.ctx.cfg.seed) * 1_000_003 + zlib.crc32(session.id.encode())) % (2**31)

    # -- the Method protocol ----------------------------------------------------------------------
    def start(self, session: Session) -> None:
        super().start(session)
        session.state["summary_from"] = 0
        session.state["g_context"] = {}
        session.state["mined"] = {}
        session.adaptation["knobs"] = {
            "M": self.n_candidates, "W": self.switch_cfg.warm_window,
            "m": self.switch_cfg.gate.consecutive_hits,
            "B": self.switch_cfg.acceptance.batch,  # None: Thm. 2 per dialogue (sigma estimated)
            "M_source": "theory" if self.cfg.soft_prompt.n_candidates == AUTO else "config",
            "W_source": "theory" if self.cfg.switch.warm_window == AUTO else "config",
            "B_source": "config" if self.switch_cfg.acceptance.batch is not None else
                        "thm2 (per dialogue: adaptation.switch.acceptance)",
            "theory": {k: (round(v, 6) if isinstance(v, float) else v)
                       for k, v in self.theory_values.items()},
        }

    def g_messages(self, session: Session, turn: int) -> list[dict[str, str]]:
        """Summary of the turns before the last K, then the last K verbatim, then q_t."""
        g = self._g()
        pairs = session.history[:turn]
        k = self.summary_cfg.verbatim_turns
        split = max(len(pairs) - k, 0)
        old, recent = pairs[:split], pairs[split:]
        summary = summarize(old, session.user(turn), self.summary_cfg,
                            embed=self.ctx.encoder().encode, count_tokens=g.count_tokens,
                            centroid_from=session.state.get("summary_from", 0))
        messages: list[dict[str, str]] = []
        if summary.text:
            messages.append({"role": "system", "content": self.summary_cfg.header + summary.text})
        messages.extend(session.full_messages(turn, recent))
        session.state["g_context"][turn] = {
            "summary_tokens": summary.tokens, "summary_sentences": len(summary.sentences),
            "summary_candidates": summary.n_candidates, "summarized_turns": len(old),
            "verbatim_turns": len(recent), "summary_budget": self.summary_cfg.budget_tokens,
            "summary_centroid_from": session.state.get("summary_from", 0),
            "summary": summary.text,
        }
        return messages

    def g_context(self, session: Session, turn: int) -> dict[str, Any] | None:
        return session.state["g_context"].get(turn)

    def null_texts(self, session: Session) -> list[dict[str, list[str]]]:
        texts = super().null_texts(session)
        for t, answers in session.state["mined"].items():
            if t < len(texts):
                texts[t]["reference"].extend(answers)
        return texts

    def on_rollback(self, session: Session, turn: int) -> None:
        """Refresh the summary's centroid on the new window (paper Sec. 3.3): the drift
        monitor's refreshed window starts at the first query of the drifted sliding window."""
        start = self._state(session).drift.since
        session.state["summary_from"] = start
        refreshes = session.adaptation.setdefault("summary_refreshes", [])
        refreshes.append({"turn": turn, "centroid_from": start})

    # -- adaptation -----------------------------------------------------------------------------
    def adapt(self, session: Session) -> None:
        """The adaptation, from the adapter cache when a run with the same training inputs
        already trained it (``switching/adapter_cache.py``), else :meth:`_adapt_fresh`."""
        cache, key = self._adapter_cache(session)
        if cache is not None and key is not None:
            started = time.perf_counter()
            hit = cache.load(key)
            if hit is not None:
                self._restore(session, key, *hit)
                # the training's seconds as measured: this turn's latency counts them as spent
                session.state[RESTORED_STATE] = (session.state.get(RESTORED_STATE, 0.0)
                                                 + float(hit[1]["adaptation_add"].get("seconds_total", 0.0)))
                session.adaptation["adapter_cache"] = {
                    "hit": True, "key": key,
                    "load_s": round(time.perf_counter() - started, 6),
                    "note": "adapter, records, tokens and stage seconds restored as measured "
                            "when it was trained (the training cost is counted)"}
                log.info("dialogue %s: adaptation reused from the adapter cache (%s)",
                         session.id, key)
                return
        before = _snapshot(session)
        self._adapt_fresh(session)
        adapter = self.session_adapter(session)
        if cache is not None and key is not None and adapter is not None and adapter.adapter_id:
            record = _delta(session, before, adapter.adapter_id)
            cache.store(key, lora_state(self._g().model), record)
            session.adaptation["adapter_cache"] = {"hit": False, "key": key}

    def _adapter_cache(self, session: Session) -> tuple[AdapterCache | None, str | None]:
        ac = self.cfg.get("adapter_cache")
        if ac is None or not bool(ac.get("enabled", False)):
            return None, None
        from somabench.config import to_dict

        g = self._g()
        w = self.switch_cfg.warm_window
        warm = [(session.full_messages(t, session.history[:t]), session.own_answers[t])
                for t in range(min(w, len(session.own_answers)))]
        key = training_key(
            to_dict(self.cfg),
            g_fingerprint=g.fingerprint(), f_fingerprint=self.ctx.raw("F").fingerprint(),
            generation=to_dict(self.ctx.cfg.generation),
            seed=self._seed(session), dialogue_id=session.id, warm=warm)
        # next to the request cache (F's mined answers live there): a fresh cache.path is a
        # fresh adapter cache too
        root = ac.get("path") or str(Path(str(self.ctx.cfg.cache.path)).parent / "adapters")
        return AdapterCache(root), key

    def _restore(self, session: Session, key: str, state: dict[str, torch.Tensor],
                 record: dict[str, Any]) -> None:
        adapter = self.new_adapter(session, self.lora_cfg, self._seed(session))
        adapter.load_state(state)
        if record.get("adapter_id") not in (None, adapter.adapter_id):
            raise RuntimeError(f"adapter cache entry {key}: restored weights hash to "
                               f"{adapter.adapter_id}, the entry says {record['adapter_id']}")
        for k, v in record["adaptation_set"].items():
            session.adaptation[k] = v
        for k, v in record["adaptation_add"].items():
            session.adaptation[k] = round(session.adaptation.get(k, 0.0) + v, 6)
        for role, usage in record["adaptation_tokens"].items():
            session.add_adaptation_tokens(role, Usage(**usage))
        for stage, roles in record["train_tokens_by_stage"].items():
            for role, counts in roles.items():
                session.add_train_tokens(role, stage, counts)
        session.state["mined"] = {int(t): a for t, a in record["mined"].items()}
        session.state["acceptance_holdout"] = [tuple(h) for h in record["holdout"]]
        session.state["acceptance_holdout_capped"] = record["holdout_capped"]

    def _adapt_fresh(self, session: Session) -> None:
        """Mining -> F on mined prompts -> LoRA; every stage timed and recorded.

        The neighbour index is built (or loaded) once per G and dtype and reused; its time is
        recorded as ``neighbor_index_s`` outside ``seconds_total`` (it is not per-dialogue work).
        Training compute goes to ``train_tokens`` (contract 2), per stage.
        """
        from somabench.config import progress_enabled

        g = self._g()
        w = self.switch_cfg.warm_window
        mc = self.mining_cfg
        progress = progress_enabled(self.ctx.cfg)
        warm = []
        for t in range(w):
            if t < len(session.own_answers) and session.own_answers[t]:
                warm.append((t, session.full_messages(t, session.history[:t]), session.own_answers[t]))
        if not warm:
            session.adaptation["adaptation_skipped"] = "no warm-start turn has an F answer"
            log.warning("dialogue %s: no usable warm turn; G is gated without adaptation", session.id)
            return
        seed = self._seed(session)
        started = time.perf_counter()
        built = self._index is None
        index = self.neighbor_index()
        session.adaptation.update(neighbor_index_s=round(time.perf_counter() - started, 6),
                                  neighbor_index_reused=not built)
        with self.timed(session, "mining") as box:
            items = [it for t, msgs, ans in warm if (it := encode_turn(
                g, t, msgs, ans, mc.max_context_tokens, mc.max_answer_tokens))]
            generator = torch.Generator().manual_seed(seed)
            result = mine(g.model, g.tokenizer, items, index, mc, generator, progress=progress)
        session.add_train_tokens("G", "mining", result.tokens)
        session.adaptation.update(
            mining_steps=result.steps,
            hardness={str(t): round(r, 6) for t, r in result.hardness.items()},
            mining_final={k: round(v, 6) for k, v in result.final.items()},
            mining_history=[round(v, 6) for v in result.history],
            mining_history_turns=result.history_turns,
            prompt_shift=[round(v, 6) for v in result.prompt_shift],
            verbalized_changed=[round(v, 6) for v in result.verbalized_changed],
            verbalized=[v.text for v in result.verbalized],
            verbalized_ids=[v.ids for v in result.verbalized],
            verbalized_initial=[v.text for v in result.verbalized_initial],
        )
        log.info("dialogue %s: mining %d steps in %.1fs, J (same turn) %.4f -> %.4f, ||P-P0||/||P0|| %.3f, "
                 "V(P) changed %.0f%%", session.id, result.steps, box["seconds"],
                 result.final["J_first"], result.final["J_last"],
                 result.final["prompt_shift_mean"], 100 * result.final["verbalized_changed_mean"])

        # F on the mined directions: V(P_m) (+) D_{t-1} (+) q_t, one batched (cached) call.
        mq = self.cfg.mined_queries
        gen = self.gen if mq.max_new_tokens is None else GenerationConfig.from_cfg(
            self.gen, max_new_tokens=int(mq.max_new_tokens))
        jobs = [(m, t, with_prefix(msgs, result.verbalized[m].text, str(mq.separator)))
                for t, msgs, _ in warm for m in range(self.n_candidates)]
        with self.timed(session, "f_queries") as box:
            completions = self.ctx.backend("F").chat_batch([j[2] for j in jobs], gen)
        log.info("dialogue %s: %d F queries on V(P) in %.1fs", session.id, len(jobs), box["seconds"])
        usage = Usage()
        mined: dict[int, list[tuple[int, str]]] = {}
        for (m, t, _), comp in zip(jobs, completions, strict=True):
            usage = usage + Usage(comp.prompt_tokens, comp.completion_tokens)
            if comp.status == "ok" and comp.text:
                mined.setdefault(t, []).append((m, comp.text))
        session.add_adaptation_tokens("F", usage)
        session.state["mined"] = {t: [a for _, a in pairs] for t, pairs in mined.items()}
        session.adaptation.update(f_queries=len(jobs), f_query_tokens={
            "prompt": usage.prompt, "completion": usage.completion})

        # Localized LoRA on the hardness-weighted local batch.
        with self.timed(session, "lora") as box:
            stats = self._train_lora(session, g, warm, mined, result, seed, progress)
        session.add_train_tokens("G", "lora", stats.tokens)
        gen_used = stats.generation_tokens
        session.add_adaptation_tokens("G", Usage(gen_used["prompt"], gen_used["completion"]))
        session.adaptation.update(
            lora_steps=stats.steps, lora_epochs=stats.epochs,
            lora_early_stopped=stats.early_stopped, lora_early_stopping=stats.early_stopping,
            lora_best_step=stats.best_step, lora_heldout_examples=stats.heldout_examples,
            lora_trainable_params=stats.trainable_params, lora_padding_tokens=stats.padding_tokens,
            lora_gap_generation_tokens=dict(gen_used),
            lora_history=[{k: round(v, 6) for k, v in h.items()} for h in stats.history],
            lora_final=stats.history[-1] if stats.history else None, adapter_id=g.adapter_id,
        )
        log.info("dialogue %s: LoRA %d steps in %.1fs (early stopping: %s) -> %s", session.id,
                 stats.steps, box["seconds"], stats.early_stopping, g.adapter_id)

    def _train_lora(self, session: Session, g: Any, warm: list[tuple[int, Any, str]],
                    mined: dict[int, list[tuple[int, str]]], result: Any, seed: int,
                    progress: bool = False) -> Any:
        """Warm + mined pairs; the last warm turn(s) and their mined pairs held out for early
        stopping when the warm window is large enough (``lora.early_stopping``)."""
        mq = self.cfg.mined_queries
        weights = self._hardness_weights(result.hardness)
        lc, mined_input = self.lora_cfg, str(self.cfg.lora.mined_input)
        train_turns, held_turns, why = lc.early_stopping.split([t for t, _, _ in warm])
        holdout = self._choose_holdout(session, warm, mined, held_turns, result)
        examples: list[Example] = []
        held: list[Example] = []
        for t, msgs, ans in warm:
            target = held if t in held_turns else examples
            ex = make_example(g, msgs, ans, weights.get(t, 1.0), "warm", t, lc.max_seq_tokens)
            if ex:
                target.append(ex)
            if t in held_turns:
                continue  # F's answers to V(P_m) (+) S_t would leak the held-out context
            for m, answer in mined.get(t, []):
                if (t, m) in holdout and not self.switch_cfg.acceptance.positive_control:
                    continue  # the acceptance batch (mined_holdout): never trained on
                prefix = result.prompts[m] if mined_input == "soft" else None
                text_msgs = with_prefix(msgs, result.verbalized[m].text, str(mq.separator)) \
                    if mined_input == "verbalized" else msgs
                ex = make_example(g, text_msgs, answer, weights.get(t, 1.0), "mined", t,
                                  lc.max_seq_tokens, prefix)
                if ex:
                    examples.append(ex)
        adapter = self.new_adapter(session, lc, seed)
        session.adaptation.update(
            lora_examples=len(examples),
            lora_examples_mined=sum(e.kind == "mined" for e in examples),
            lora_heldout_turns=held_turns, lora_train_turns=train_turns,
            hardness_weights={str(t): round(v, 6) for t, v in weights.items()})
        return adapter.train(examples, self.ctx.encoder(), held_out=held, progress=progress,
                             heldout_note=why)

    def _choose_holdout(self, session: Session, warm: list[tuple[int, Any, str]],
                        mined: dict[int, list[tuple[int, str]]], held_turns: list[int],
                        result: Any) -> set[tuple[int, int]]:
        """``acceptance.batch_source: mined_holdout``: the mined contexts kept out of training.

        Taken from the training turns (an early-stopping turn's pairs already validate),
        highest prompt index first, spread over turns; at most half of the mined pairs, so the
        LoRA keeps most of its mined data (``batch_capped`` when |B| asked for more).
        """
        acc = self.switch_cfg.acceptance
        session.state["acceptance_holdout"] = []
        if acc.uses_future_turns or not acc.enabled:
            return set()
        messages = {t: msgs for t, msgs, _ in warm}
        pool = sorted(((t, m, a) for t, pairs in mined.items() if t not in held_turns
                       for m, a in pairs), key=lambda x: (-x[1], x[0]))
        size, bound, capped = acc.holdout_size(len(pool) // 2)
        chosen = pool[:size]
        sep = str(self.cfg.mined_queries.separator)
        session.state["acceptance_holdout"] = [
            (f"{t}:{m}", with_prefix(messages[t], result.verbalized[m].text, sep), answer)
            for t, m, answer in chosen]
        session.state["acceptance_holdout_capped"] = capped
        session.adaptation["acceptance_holdout"] = {
            "size": len(chosen), "asked": (acc.batch if acc.batch is not None else
                                           f"thm2 at the prior sigma: {bound:.2f}"),
            "capped": capped, "available_mined_pairs": len(pool),
            "contexts": [f"{t}:{m}" for t, m, _ in chosen],
            "trained_on": acc.positive_control}
        return {(t, m) for t, m, _ in chosen}

    def acceptance_holdout(self, session: Session) -> list[tuple[str, list[dict[str, str]], str]]:
        return list(session.state.get("acceptance_holdout", []))

    def _hardness_weights(self, hardness: dict[int, float]) -> dict[int, float]:
        """omega_t = r_t / mean(r), clipped to [min_weight, max_weight] (hardness-weighted batch)."""
        if not hardness:
            return {}
        hw = self.cfg.lora.hardness
        mean = sum(hardness.values()) / len(hardness)
        if mean <= 0:
            return {t: 1.0 for t in hardness}
        return {t: min(max(r / mean, float(hw.min_weight)), float(hw.max_weight))
                for t, r in hardness.items()}


_ADDITIVE = ("seconds_total",)


def _is_additive(key: str) -> bool:
    """Stage timers accumulate (``timed``): the cache stores what ``adapt`` added to them."""
    return key in _ADDITIVE or key.endswith("_s") or key.endswith("_cpu_s")


def _snapshot(session: Session) -> dict[str, Any]:
    import copy

    return {"adaptation": copy.deepcopy(session.adaptation),
            "tokens": {r: dataclasses.asdict(u) for r, u in session.adaptation_tokens.items()}}


def _delta(session: Session, before: dict[str, Any], adapter_id: str) -> dict[str, Any]:
    """What ``_adapt_fresh`` added to the session: the adapter cache's record."""
    old = before["adaptation"]
    set_, add = {}, {}
    for k, v in session.adaptation.items():
        if k in ("train_tokens_by_stage", "switch", "adapter_cache"):
            continue
        if _is_additive(k) and isinstance(v, (int, float)) and not isinstance(v, bool):
            if v != old.get(k, 0.0):
                add[k] = v - old.get(k, 0.0)
        elif k not in old or old[k] != v:
            set_[k] = v
    tokens = {}
    for role, usage in session.adaptation_tokens.items():
        now, was = dataclasses.asdict(usage), before["tokens"].get(role, {})
        diff = {f: (None if now[f] is None else now[f] - (was.get(f) or 0)) for f in now}
        if any(diff.values()):
            tokens[role] = diff
    holdout = session.state.get("acceptance_holdout", [])
    return {"adaptation_set": set_, "adaptation_add": add, "adaptation_tokens": tokens,
            "train_tokens_by_stage": session.adaptation.get("train_tokens_by_stage", {}),
            "mined": {str(t): a for t, a in session.state.get("mined", {}).items()},
            "holdout": [list(h) for h in holdout],
            "holdout_capped": bool(session.state.get("acceptance_holdout_capped", False)),
            "adapter_id": adapter_id}
