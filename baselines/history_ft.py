"""History-FT (paper App. B.3): LoRA-fine-tune G on the Original's warm-window turns, then switch.

Why a baseline: it asks whether plain supervised fine-tuning on the few (S_t, a_t^F) pairs a
dialogue offers matches SOMA's mined adaptation. F serves the warm window and the gate turns
exactly as in SOMA (the shared switch, ``somabench.switching``). When the warm
window is complete, a LoRA adapter on G's attention projections is trained on pairs
(S_t = the Original's full context before turn t, a_t^F = F's answer to turn t), with the last
``train.holdout`` warm pair(s) held out for early stopping; the adapted G then serves the gate
candidates and, after the switch, every turn with the full history.

The adapter lifecycle is SOMA's (``somabench.switching.adapter.SessionAdapter``, created with
``new_adapter`` and owned by the session: attach, train with validation and best-weights
restore, adapter id = hash of the weights, released in ``finish``, which restores the base
exactly); History-FT trains it with plain NLL (Eq. 4's alpha = 0, no soft prompts, weight 1).
"""

from __future__ import annotations

import logging
from typing import Any

from somabench.baselines.history_prefix import HistoryPrefix
from somabench.config import progress_enabled
from somabench.methods import MethodContext, Session
from somabench.records import Usage
from somabench.switching.lora import EarlyStopping, LoraConfig, TrainStats, make_example

log = logging.getLogger(__name__)


def lora_config(cfg: Any) -> LoraConfig:
    """History-FT's ``lora``/``train`` config as the shared LoraConfig (plain SFT: alpha = 0)."""
    lcfg, tcfg = cfg.lora, cfg.train
    return LoraConfig(
        rank=int(lcfg.r), alpha=float(lcfg.alpha), dropout=float(lcfg.dropout),
        target_modules=tuple(lcfg.target_modules), lr=float(tcfg.lr),
        lr_schedule=str(tcfg.lr_schedule), weight_decay=float(tcfg.weight_decay),
        grad_clip=float(tcfg.grad_clip), epochs=None, max_steps=int(tcfg.max_steps),
        examples_per_step=int(tcfg.examples_per_step), batching=str(tcfg.batching),
        cos_alpha=0.0, gap_max_new_tokens=int(tcfg.gap_max_new_tokens),
        max_seq_tokens=int(tcfg.max_length),
        early_stopping=EarlyStopping.from_cfg({
            "metric": tcfg.metric, "holdout_turns": tcfg.holdout, "min_train_turns": 1,
            "eval_every": tcfg.eval_every, "patience": tcfg.patience, "threshold": None}),
    )


class HistoryFT(HistoryPrefix):
    name = "history_ft"

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        self.lora_cfg = lora_config(cfg)

    def g_context(self, session: Session, turn: int) -> dict[str, Any] | None:
        context = super().g_context(session, turn) or {}
        context["adapter_id"] = self.ctx.raw("G").adapter_id
        return context

    # -- adaptation ---------------------------------------------------------------------------
    def adapt(self, session: Session) -> None:
        """Train a fresh LoRA adapter on this dialogue's warm-window (S_t, a_t^F) pairs."""
        raw = self.ctx.raw("G")
        if self.ctx.raw("F") is raw:
            raise ValueError("history_ft adapts G in place, but F and G are the same loaded "
                             "model here; use a model config whose F and G differ")
        with self.timed(session, "adapt") as box:
            info, stats = self._train(session, raw)
        info["seconds"] = round(box["seconds"], 6)
        session.add_train_tokens("G", "lora", stats.tokens)
        gen = stats.generation_tokens
        if gen["prompt"] or gen["completion"]:
            session.add_adaptation_tokens("G", Usage(gen["prompt"], gen["completion"]))
        session.adaptation["lora"] = info
        log.info("dialogue %s: LoRA trained (%d steps, best %s, %.1fs, early stopping: %s) -> %s",
                 session.id, info["steps"], info["best_step"], box["seconds"],
                 info["early_stopping"], raw.adapter_id)

    def _train(self, session: Session, raw: Any) -> tuple[dict[str, Any], TrainStats]:
        lc = self.lora_cfg
        turns = [t for t in range(self.switch_cfg.warm_window) if t < len(session.own_answers)]
        train_turns, held_turns, why = lc.early_stopping.split(turns)

        def pairs(ts: list[int]) -> list[Any]:
            out = [make_example(raw, session.full_messages(t, session.history[:t]),
                                session.own_answers[t], 1.0, "warm", t, lc.max_seq_tokens)
                   for t in ts]
            return [ex for ex in out if ex is not None]

        train, held = pairs(train_turns), pairs(held_turns)
        adapter = self.new_adapter(session, lc, int(self.cfg.train.seed))
        stats = adapter.train(train, self.ctx.encoder() if lc.early_stopping.metric == "gap"
                              else None, held_out=held, progress=progress_enabled(self.ctx.cfg),
                              heldout_note=why)
        val_key = f"val_{lc.early_stopping.metric}"
        info = {
            "adapter_id": adapter.adapter_id, "train_pairs": len(train), "holdout_pairs": len(held),
            "steps": stats.steps, "best_step": stats.best_step if stats.best_step is not None
            else stats.steps, "stopped_early": stats.early_stopped,
            "early_stopping": stats.early_stopping,
            "train_losses": [round(h["nll"], 6) for h in stats.history if "nll" in h],
            "val_losses": [(int(h["step"]), round(h[val_key], 6)) for h in stats.history
                           if val_key in h],
            "trainable_params": stats.trainable_params, "train_tokens": dict(stats.tokens),
        }
        return info, stats
