"""SOMA as a somabench method (paper Sec. 3-4): warm start, mining, LoRA, gate, summary, drift.

The per-dialogue state machine (switch logic shared with the baselines in switching.py):

1. warm start: F serves turns 0..W-1 with the full history;
2. at turn W (``adapt``): mine M soft prompts on frozen G over the warm turns (mining.py),
   verbalize them and query F with V(P_m) (+) D_{t-1} (+) q_t (batched, cached), then train a
   per-dialogue LoRA on the local batch = warm pairs + mined pairs, hardness-weighted
   (lora.py); the gate is calibrated on the warm window (switching.py);
3. gate turns: F serves, G+LoRA answers with its serving context as the candidate;
4. after the switch: G+LoRA serves with the extractive summary + the last K turns verbatim
   (summary.py), never calling F, except one F turn per drift rollback (summary refreshed).

Ablations are config variants of this class: ``soma_wo_adl`` (beta = 0) and
``soma_wo_expw_adl`` (lambda_exp = 0, beta = 0).
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any

import torch

from somabench.backends.base import GenerationConfig
from somabench.methods import Session
from somabench.records import Usage
from somabench.soma import theory
from somabench.soma.lora import Example, LoraConfig, SessionAdapter, make_example
from somabench.soma.mining import MiningConfig, encode_turn, mine
from somabench.soma.neighbors import NeighborIndex, load_or_build
from somabench.soma.soft_prompt import with_prefix
from somabench.soma.summary import SummaryConfig, summarize
from somabench.soma.switching import AUTO, SwitchingMethod

log = logging.getLogger(__name__)

MINED_INPUTS = ("soft", "verbalized", "plain")


class Soma(SwitchingMethod):
    """SOMA (registered as ``soma`` and, with other configs, its ablations)."""

    name = "soma"

    def __init__(self, cfg: Any, ctx: Any) -> None:
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

    def serve_label(self, session: Session) -> str:
        return "G+lora" if session.state.get("adapter") is not None else "G"

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

    def release(self, session: Session) -> None:
        adapter: SessionAdapter | None = session.state.pop("adapter", None)
        if adapter is not None:
            adapter.release()

    # -- adaptation -----------------------------------------------------------------------------
    def adapt(self, session: Session) -> None:
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
                prefix = result.prompts[m] if mined_input == "soft" else None
                text_msgs = with_prefix(msgs, result.verbalized[m].text, str(mq.separator)) \
                    if mined_input == "verbalized" else msgs
                ex = make_example(g, text_msgs, answer, weights.get(t, 1.0), "mined", t,
                                  lc.max_seq_tokens, prefix)
                if ex:
                    examples.append(ex)
        adapter = SessionAdapter(g, lc)
        adapter.attach(seed=seed)
        session.state["adapter"] = adapter
        session.adaptation.update(
            lora_examples=len(examples),
            lora_examples_mined=sum(e.kind == "mined" for e in examples),
            lora_heldout_turns=held_turns, lora_train_turns=train_turns,
            hardness_weights={str(t): round(v, 6) for t, v in weights.items()})
        return adapter.train(examples, self.ctx.encoder(), held_out=held, progress=progress,
                             heldout_note=why)

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
