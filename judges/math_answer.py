"""Judge kind ``math_answer``: judge-free accuracy and answer agreement on final-answer turns.

Why: similarity needs a judge, and offline we have no trustworthy one; but MATH-500 sessions
carry one gold final answer per turn. This judge runs inside the ordinary panel (same
``scores.jsonl`` lines, cache keys, summaries and reports) and scores two metrics, one per
prompt file (``judges/prompts/``, ``kind: answer``):

* ``accuracy`` (``math_accuracy_v1``): the method's final answer vs the gold answer;
* ``answer_agreement`` (``math_agreement_v1``): the method's final answer vs the Original's
  final answer on the same turn -- a judge-free counterpart of the paper's similarity (did G
  reach the answer F would have?). F-served turns are scored too; ``served_by`` and
  ``post_switch`` on every line mark them.

Outcomes: ``ok`` with score 1 (equivalent) or 0 (not). A reply with no extractable final
answer is ``ok`` with score 0 -- a wrong answer, as in every MATH evaluation (excluding it would
raise the accuracy of a method that fails to answer) -- and ``raw`` records it
(``"found": false``), so the report shows the found-rate beside accuracy. ``skipped`` when the
turn has no gold answer (the dataset declares none, or this dialogue has none) or, for
agreement, when the Original's reply has no extractable answer; ``api_error`` when sympy ran
past ``sympy_timeout`` and nothing else decided (rerun with a larger timeout).

Second opinion (issue 23): math-verify (:mod:`somabench.judges.math_verify_grader`) grades the
same reply against the same target on every ``ok``/``api_error`` line; ``raw`` keeps
``correct_math_verify`` (true/false, null when it failed or timed out, with
``math_verify_error``) and ``math_verify_answer`` beside our ``correct``. The score is ours.

Gold answers come from the dataset config: ``dataset.gold_answers`` names where they live in
each dialogue (``meta.answers``: one per turn). The judge spec's ``dataset`` key is the run's
dataset config (``${dataset}`` in ``conf/judge/task.yaml``); without it the judge reads
``conf/dataset/<record's dataset>.yaml``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from somabench.judges.base import Judge, JudgeError, JudgeItem, Verdict
from somabench.judges.math_equiv import GRADER_VERSION, MathGrader, extract_answer, normalize_answer
from somabench.judges.math_verify_grader import MathVerifyGrader
from somabench.judges.prompting import JudgePrompt
from somabench.records import JUDGE_API_ERROR, JUDGE_OK, JudgeStatus

log = logging.getLogger(__name__)

TARGETS = {"accuracy": "gold", "answer_agreement": "reference"}  # prompt name -> compared with
REQUIRED_SPEC = ("decimal_gold_rounding", "sympy_timeout", "last_number_fallback")


def _lookup(dialogue: Any, path: str) -> Any:
    """``meta.answers`` -> ``dialogue.meta["answers"]`` (attribute, then mapping keys)."""
    head, *rest = path.split(".")
    value = getattr(dialogue, head, None)
    for key in rest:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def load_gold(dataset_cfg: Mapping[str, Any]) -> tuple[dict[str, list[Any]], str | None]:
    """``({dialogue_id: per-turn gold answers}, reason)``; ``reason`` says why there are none.

    Reads every dialogue of the source (the run's filters do not matter: lookups are by id).
    """
    name = dataset_cfg.get("name")
    path = dataset_cfg.get("gold_answers")
    if not path:
        return {}, (f"dataset '{name}' declares no gold answers (dataset.gold_answers is "
                    f"null; set it to where each dialogue keeps them, e.g. meta.answers)")
    from somabench.registry import datasets, load_builtin

    load_builtin()
    loader = datasets.get(str(dataset_cfg["loader"]))
    gold: dict[str, list[Any]] = {}
    for dialogue in loader(dict(dataset_cfg)):
        answers = _lookup(dialogue, str(path))
        if answers is None:
            continue
        if not isinstance(answers, (list, tuple)):
            raise JudgeError(f"dataset '{name}', dialogue {dialogue.id}: {path} must be a list "
                             f"with one gold answer per turn, got {type(answers).__name__}")
        gold[dialogue.id] = list(answers)
    return gold, None


def dataset_cfg_by_name(name: str) -> dict[str, Any]:
    """``conf/dataset/<name>.yaml`` as a plain dict (no Hydra compose: this may run inside a
    Hydra job)."""
    from omegaconf import OmegaConf

    from somabench.config import conf_dir

    path = Path(conf_dir()) / "dataset" / f"{name}.yaml"
    if not path.exists():
        raise JudgeError(f"math_answer judge: no conf/dataset/{name}.yaml to read gold answers "
                         f"from; give the judge spec a dataset (dataset: ${{dataset}})")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]


class MathAnswerJudge(Judge):
    """Extracts final answers and compares them by MATH equivalence (``math_equiv``)."""

    kind = "math-answer"

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        missing = [k for k in REQUIRED_SPEC if spec.get(k) is None]
        if missing:
            raise JudgeError(f"judge.judges.{name}: kind math_answer needs {missing} "
                             f"(see conf/judge/task.yaml)")
        self.name = name
        self.spec = dict(spec)
        self.model = f"math-equivalence-v{GRADER_VERSION}"
        self.grader = MathGrader(sympy_timeout=float(spec["sympy_timeout"]),
                                 decimal_gold_rounding=bool(spec["decimal_gold_rounding"]))
        self.second = MathVerifyGrader(timeout=float(spec["sympy_timeout"]))
        self.last_number = bool(spec["last_number_fallback"])
        self._gold: dict[str, tuple[dict[str, list[Any]], str | None]] = {}

    def supports(self, prompt: JudgePrompt) -> bool:
        return prompt.kind == "answer"

    def _gold_for(self, dataset: str) -> tuple[dict[str, list[Any]], str | None]:
        if dataset not in self._gold:
            cfg = self.spec.get("dataset")
            if not cfg or cfg.get("name") != dataset:
                cfg = dataset_cfg_by_name(dataset)
            elif "gold_answers" not in cfg:  # a run made before datasets declared gold answers
                declared = dataset_cfg_by_name(dataset).get("gold_answers")
                cfg = {**cfg, "gold_answers": declared}
            self._gold[dataset] = load_gold(cfg)
        return self._gold[dataset]

    def gold(self, item: JudgeItem) -> tuple[str | None, str | None]:
        """(gold answer of this turn, reason when there is none)."""
        answers, reason = self._gold_for(item.dataset)
        if reason:
            return None, reason
        per_turn = answers.get(item.dialogue_id)
        if per_turn is None:
            return None, (f"dialogue {item.dialogue_id} has no gold answers (dataset "
                          f"'{item.dataset}' keeps them only for final-answer tasks)")
        if item.turn >= len(per_turn) or per_turn[item.turn] in (None, ""):
            return None, f"dialogue {item.dialogue_id} has no gold answer for turn {item.turn}"
        return str(per_turn[item.turn]), None

    def prepare(self, items: list[JudgeItem]) -> None:
        for dataset in sorted({it.dataset for it in items}):
            answers, reason = self._gold_for(dataset)
            log.info("math_answer: dataset %s: %s", dataset,
                     reason or f"gold answers for {len(answers)} dialogue(s)")

    def _target(self, prompt: JudgePrompt) -> str:
        if prompt.name not in TARGETS:
            raise JudgeError(f"prompt {prompt.id}: kind answer prompts must be named one of "
                             f"{sorted(TARGETS)}, not '{prompt.name}'")
        return TARGETS[prompt.name]

    def request_key(self, item: JudgeItem, prompt: JudgePrompt, settings: dict[str, Any]) -> str:
        from somabench.cache import cache_key

        gold, _ = self.gold(item)
        target = self._target(prompt)
        return cache_key({"judge": {"kind": "math_answer", "grader": GRADER_VERSION,
                                    "decimal_gold_rounding": self.grader.decimal_gold_rounding,
                                    "last_number": self.last_number,
                                    "math_verify": self.second.version},
                          "prompt_id": prompt.id, "prompt_sha": prompt.sha,
                          "candidate": item.candidate, "gold": gold,
                          "reference": item.reference if target == "reference" else None})

    def judge(self, item: JudgeItem, prompt: JudgePrompt, settings: dict[str, Any]) -> Verdict:
        started = time.perf_counter()
        key = self.request_key(item, prompt, settings)
        gold, reason = self.gold(item)
        if gold is None:
            return Verdict(status="skipped", error=f"no gold answer: {reason}", request_key=key)
        if self._target(prompt) == "gold":
            target, target_how = gold, "gold"
        else:
            if item.reference is None:
                return Verdict(status="skipped", request_key=key,
                               error="no Original answer for this turn in the reference dir")
            found = extract_answer(item.reference, self.last_number)
            if not found.ok:
                return Verdict(status="skipped", request_key=key,
                               error="the Original's reply has no extractable final answer")
            target, target_how = found.answer or "", f"original:{found.method}"
        answer = extract_answer(item.candidate, self.last_number)
        raw: dict[str, Any] = {"answer": answer.answer, "extracted_by": answer.method,
                               "target": target, "target_from": target_how, "found": answer.ok}
        status: JudgeStatus = JUDGE_OK
        error: str | None = None
        if answer.ok:
            timeouts = self.grader.timeouts
            same = self.grader.equivalent(answer.answer, target)
            raw["normalized"] = [normalize_answer(answer.answer), normalize_answer(target)]
            if not same and self.grader.timeouts > timeouts:
                status = JUDGE_API_ERROR
                error = (f"sympy ran past sympy_timeout={self.grader.sympy_timeout:g}s and "
                         f"nothing else decided")
        else:  # no final answer: wrong, and recorded as not found
            same = False
            raw["note"] = ("no final answer in the reply (no \\boxed{}, no 'the answer is'"
                           + (", no number)" if self.last_number else
                              "; last_number_fallback is off)") + ": counted wrong")
        raw["correct"] = same if status == JUDGE_OK else None
        second = self.second.grade(item.candidate,
                                   gold if target_how == "gold" else str(item.reference),
                                   target_is_gold=target_how == "gold")
        raw["correct_math_verify"] = second.get("correct")
        raw["math_verify_answer"] = second.get("answer")
        if second.get("error"):
            raw["math_verify_error"] = second["error"]
        return Verdict(status=status, score=(1.0 if same else 0.0) if status == JUDGE_OK else None,
                       raw=json.dumps(raw, ensure_ascii=False), error=error, attempts=1,
                       request_key=key, seconds=time.perf_counter() - started)

    def close(self) -> None:
        self.grader.close()
        self.second.close()


def build_math_answer_judge(name: str, spec: dict[str, Any], panel: dict[str, Any],
                            cache: Any, cache_dir: str | None = None) -> MathAnswerJudge:
    """Registry factory for ``kind: math_answer`` (no cache: grading is cheap and
    deterministic, and ``scores.jsonl`` already keeps every verdict with its request key)."""
    return MathAnswerJudge(name, spec)
