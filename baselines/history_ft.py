"""History-FT (paper App. B.3): LoRA-fine-tune G on the Original's warm-window turns, then switch.

Why a baseline: it asks whether plain supervised fine-tuning on the few (S_t, a_t^F) pairs a
dialogue offers matches SOMA's mined adaptation. F serves the warm window and the gate turns
exactly as in SOMA (shared switch controller, ``somabench.soma.switching``). When the warm
window is complete, a LoRA adapter (peft) on G's attention projections is trained on pairs
(S_t = the Original's full context before turn t, a_t^F = F's answer to turn t), with the last
``train.holdout`` warm pair(s) held out for early stopping; the adapted G then serves the gate
candidates and, after the switch, every turn with the full history.

Isolation: the adapter is injected into ``ctx.raw("G").model`` in place for one dialogue only
(the method is never batched across dialogues); while it is active the backend's
``adapter_id`` is a hash of the trained LoRA weights, so the request cache never serves one
adapter's answers for another (or for the base model); ``finish`` unloads it, which restores
the base weights exactly, and resets ``adapter_id`` to None.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from somabench.baselines.history_prefix import HistoryPrefix

from somabench.methods import Session
from somabench.records import Usage

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value torch's cross_entropy skips (its default ignore_index)


@dataclass
class Example:
    """One (S_t, a_t^F) pair tokenized for G: loss only on the answer tokens."""

    input_ids: list[int]
    labels: list[int]


def encode_pair(backend: Any, messages: list[dict[str, str]], answer: str, max_length: int) -> Example:
    """G's chat-rendered context followed by the answer and EOS, left-truncated to max_length."""
    tok = backend.tokenizer
    prompt_ids = tok(backend.render(messages), add_special_tokens=False)["input_ids"]
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    answer_ids = answer_ids[:max_length]
    prompt_ids = prompt_ids[max(0, len(prompt_ids) + len(answer_ids) - max_length):]
    return Example(prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids)


def example_loss(model: Any, example: Example) -> Any:
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    ids = torch.tensor([example.input_ids], device=device)
    labels = torch.tensor([example.labels], device=device)
    logits = model(input_ids=ids).logits[:, :-1, :].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX)


def lora_state(model: Any) -> dict[str, Any]:
    """A detached copy of the trainable (LoRA) tensors."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def weights_hash(state: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class HistoryFT(HistoryPrefix):
    name = "history_ft"

    def __init__(self, cfg: Any, ctx: Any) -> None:
        super().__init__(cfg, ctx)
        self._peft: Any = None

    def serve_label(self, session: Session) -> str:
        return "G+lora" if self._peft is not None else "G"

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
        if self._peft is not None:  # never let one dialogue see another's adapter
            self.release(session)
        with self.timed(session, "adapt") as box:
            info = self._train(session, raw)
        info["seconds"] = round(box["seconds"], 6)
        session.add_adaptation_tokens("G", Usage(prompt=info["tokens_processed"], completion=None))
        session.adaptation["lora"] = info
        log.info("dialogue %s: LoRA trained (%d steps, best %s, %.1fs) -> %s", session.id,
                 info["steps"], info["best_step"], box["seconds"], raw.adapter_id)

    def _train(self, session: Session, raw: Any) -> dict[str, Any]:
        """Inject a fresh adapter into ``raw.model``, train it with early stopping, keep the
        best checkpoint and set ``raw.adapter_id`` to its weights' hash."""
        import torch
        from peft import LoraConfig, get_peft_model

        lcfg, tcfg = self.cfg.lora, self.cfg.train
        warm = self.switch_cfg.warm_window
        pairs = [(session.full_messages(t, session.history[:t]), session.own_answers[t])
                 for t in range(warm)]
        examples = [encode_pair(raw, m, a, int(tcfg.max_length)) for m, a in pairs]
        n_hold = min(int(tcfg.holdout), len(examples) - 1)
        train, held = (examples[:-n_hold], examples[-n_hold:]) if n_hold > 0 else (examples, [])

        torch.manual_seed(int(tcfg.seed))
        config = LoraConfig(r=int(lcfg.r), lora_alpha=int(lcfg.alpha),
                            lora_dropout=float(lcfg.dropout),
                            target_modules=list(lcfg.target_modules), bias="none",
                            task_type="CAUSAL_LM")
        peft_model = get_peft_model(raw.model, config)  # injects LoRA layers into raw.model
        self._peft = peft_model
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optim = torch.optim.AdamW(params, lr=float(tcfg.lr), weight_decay=float(tcfg.weight_decay))

        def validate() -> float | None:
            if not held:
                return None
            peft_model.eval()
            with torch.no_grad():
                return float(sum(example_loss(peft_model, ex).item() for ex in held) / len(held))

        train_losses: list[float] = []
        val_losses: list[tuple[int, float]] = []
        best: tuple[float, int, dict[str, Any]] | None = None
        bad_evals, stopped_early, tokens, step = 0, False, 0, 0
        for step in range(1, int(tcfg.max_steps) + 1):
            peft_model.train()
            example = train[(step - 1) % len(train)]
            loss = example_loss(peft_model, example)
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, float(tcfg.grad_clip))
            optim.step()
            train_losses.append(round(float(loss.item()), 6))
            tokens += len(example.input_ids)
            if held and step % int(tcfg.eval_every) == 0:
                val = validate()
                tokens += sum(len(ex.input_ids) for ex in held)
                val_losses.append((step, round(val, 6)))
                if best is None or val < best[0]:
                    best, bad_evals = (val, step, lora_state(peft_model)), 0
                else:
                    bad_evals += 1
                    if bad_evals >= int(tcfg.patience):
                        stopped_early = True  # validation loss diverged: stop, keep the best
                        break
        if best is not None:
            current = dict(peft_model.named_parameters())
            with torch.no_grad():
                for name, value in best[2].items():
                    current[name].copy_(value)
        peft_model.eval()
        adapter_hash = weights_hash(lora_state(peft_model))
        raw.adapter_id = f"history_ft-{adapter_hash}"
        return {
            "adapter_id": raw.adapter_id, "train_pairs": len(train), "holdout_pairs": len(held),
            "steps": step, "best_step": best[1] if best else step, "stopped_early": stopped_early,
            "train_losses": train_losses, "val_losses": val_losses,
            "trainable_params": int(sum(p.numel() for p in params)), "tokens_processed": tokens,
        }

    def release(self, session: Session) -> None:
        """Unload this dialogue's adapter: base weights back, adapter id cleared."""
        if self._peft is None:
            return
        raw = self.ctx.raw("G")
        raw.model = self._peft.unload()
        raw.model.eval()
        raw.adapter_id = None
        self._peft = None
