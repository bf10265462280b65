"""``python -m somabench judge <run dir> judge=<panel> [overrides]``: re-judge an existing run.

Why: judging is the expensive, changeable part (new judges, prompts, endpoints); generation
should never be redone for it. The run's own resolved config (``run.json``) is the base; the
``judge`` group comes from ``conf/judge/<panel>.yaml`` plus ``judge.*`` overrides; other
``key=value`` overrides (``cache.enabled=false``, ``progress=false``) apply to the base.
Only missing or failed lines are judged (``scores.jsonl`` is the resume state); cached
judgments cost nothing.

Examples::

    python -m somabench judge outputs/run/tiny/mathmt/surrogate judge=embedding
    python -m somabench judge outputs/run/tiny/mathmt/soma judge=paper judge.concurrency=4
    python -m somabench judge RUN judge=local '~judge.judges.smollm2_135m'
    python -m somabench judge RUN judge=paper judge.judges.gpt_oss.base_url=http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from somabench.errors import ConfigError
from somabench.rundir import RUN_HEADER, TURNS_FILE, read_header

log = logging.getLogger(__name__)
# The module is ``rejudge`` so that it does not collide with the ``somabench.judges`` package
# (or the ``judges`` registry); the command keeps its name, ``judge``.

USAGE = __doc__ or ""
_ABSENT = object()  # marks a key missing from the run config


class JudgeCliError(ConfigError):
    """A usage or setup error of the re-judge command, printed without a traceback."""


def _is_judge_override(arg: str) -> bool:
    key = arg.lstrip("+~").split("=", 1)[0]
    return key == "judge" or key.startswith("judge.")


def build_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's resolved config with the requested judge panel and overrides applied."""
    from somabench.config import compose, explain_override_error

    header = read_header(run_dir)
    if header is None:
        raise JudgeCliError(f"{run_dir} has no {RUN_HEADER}; give the directory of a "
                            f"somabench run (outputs/<task_name>/<run_name>)")
    base = OmegaConf.create(header.config)
    judge_overrides = [o for o in overrides if _is_judge_override(o)]
    other = [o for o in overrides if not _is_judge_override(o)]
    if not any(o.startswith("judge=") for o in judge_overrides):
        previous = base.get("judge", {}).get("name") if base.get("judge") else None
        if not previous or previous == "none":
            raise JudgeCliError("say which panel judges the run: judge=<embedding|local|"
                                "paper> (the run was generated with judge=none)")
        judge_overrides.insert(0, f"judge={previous}")
    try:
        composed = compose(judge_overrides)
    except Exception as exc:  # noqa: BLE001 - turned into a did-you-mean message when possible
        message = explain_override_error(judge_overrides, exc)
        raise JudgeCliError(message or str(exc)) from None
    base.judge = OmegaConf.to_container(composed.judge, resolve=False)
    for override in other:
        if override.startswith(("+", "~")) or "=" not in override:
            raise JudgeCliError(f"'{override}': only key=value overrides of the run's "
                                f"config (and judge=/judge.* ) are accepted here")
        key = override.split("=", 1)[0]
        if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
            raise JudgeCliError(f"'{key}' is not a key of the run's config")
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist([override]))
        assert isinstance(merged, DictConfig)  # a mapping merged with a dotlist stays one
        base = merged
    if base.judge.name == "none":
        raise JudgeCliError("judge=none judges nothing; choose embedding, local or paper")
    return base


def ensure_reference_for(cfg: DictConfig, run_dir: Path) -> Path:
    """The run's Original reference dir; generated (or completed) if the run has none, e.g.
    when it was made with ``judge=none`` by a method that needs no reference."""
    from somabench.judges.panel import reference_dir_of
    from somabench.records import load_turns

    ref = reference_dir_of(run_dir, cfg)
    if ref is not None and (ref / TURNS_FILE).exists():
        # a shared reference made for other dialogues (another limit / dataset.tasks) is completed
        missing = ({t.dialogue_id for t in load_turns(run_dir)}
                   - {t.dialogue_id for t in load_turns(ref)})
        if not missing:
            return ref
        log.info("%s lacks %d dialogue(s) of %s: completing it", ref, len(missing), run_dir)
    else:
        log.info("%s has no Original reference yet: generating it (model.F, same dialogues)",
                 run_dir)
    from somabench.config import progress_enabled
    from somabench.data import load_dialogues
    from somabench.registry import load_builtin
    from somabench.runner import RunContext, ensure_reference

    load_builtin()
    dialogues = load_dialogues(cfg.dataset, limit=cfg.limit, seed=int(cfg.seed), shard=cfg.shard)
    ctx = RunContext(cfg)
    try:
        _, _, ref_dir = ensure_reference(cfg, ctx, dialogues, progress_enabled(cfg))
    finally:
        if ctx.cache is not None:
            ctx.cache.close()
    return ref_dir


def main(argv: list[str]) -> int:
    """``judge RUN_DIR judge=<panel> [overrides]``; errors become one line (the dispatcher's
    guard, somabench.commands.dispatch)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] "
                                                   "%(message)s")
    run_dir, overrides = Path(argv[0]), argv[1:]
    from somabench.judges.aggregate import SUMMARY_MD
    from somabench.judges.panel import judge_run
    from somabench.registry import load_builtin

    cfg = build_config(run_dir, overrides)
    load_builtin()
    reference = ensure_reference_for(cfg, run_dir)
    objective = judge_run(cfg, run_dir, reference)
    summary = run_dir / SUMMARY_MD
    if summary.exists():  # stdout is the user interface; logs went to stderr
        print(summary.read_text(encoding="utf-8"))
    print(f"objective ({cfg.judge.get('objective', 'similarity')} %, all turns): {objective}")
    return 0

