"""``somabench tune``: an Optuna search over config keys, by ask-and-tell on the compose API.

Why not a Hydra sweeper: hydra-optuna-sweeper (1.3.0, the newest) pins ``optuna<3``, which
pinned ``sqlalchemy<2`` and ``alembic<1.14`` for every run and needed patches of optuna 2's
sampler internals to resume a search. Here each trial is ``study.ask()`` -> compose the config
with the trial's values (``somabench.config.compose``, as tests and ``plan`` do) -> ``run_task``
-> ``study.tell()``: only Optuna's public API, any optuna >= 4.

The search is ``search:`` of an ``hparams_search`` config (``conf/hparams_search/*.yaml``):
``storage`` (a file: Optuna's JournalStorage, an append-only log; or a ``sqlite:///`` URL),
``study_name``, ``direction``, ``n_trials`` (finished trials the study should hold: the same
command again resumes, a larger value extends), ``max_failure_rate``, ``sampler`` (``kind``,
``seed``, sampler options) and ``params`` (key -> Hydra sweep syntax, read as the old Optuna
sweeper read it: ``choice(...)`` categorical, ``interval(a, b)`` uniform, ``tag(log,
interval(a, b))`` log-uniform, ``range(a, b[, step])`` the integers a..b INCLUDING b; a plain
value is a fixed override).

Resume: one ``tune`` process works on a study at a time (a lock file next to the storage). A
trial left RUNNING by a killed process is run again with its stored values in its own run dir,
which resumes per dialogue, then told; a finished trial is never run again. The sampler is
seeded per trial number (``seed`` and the number), so a fresh study replays the same
suggestions and a resumed one does not repeat the first invocation's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from somabench.config import to_dict
from somabench.errors import ConfigError, RunFailedError
from somabench.locks import LockBusy, file_lock

log = logging.getLogger(__name__)

SQLITE_PREFIX = "sqlite:///"
LOCK_SUFFIX = ".tune-lock"
"""Our one-process-per-study lock. Not ``.lock``: Optuna's journal takes ``<journal>.lock`` for
each write and force-releases (deletes) a lock it finds held too long, so sharing that name
made every write wait out the grace period and then break our lock."""
RESULTS_FILE = "optimization_results.yaml"  # best value + params (the old sweeper's file name)
TRIALS_FILE = "trials.csv"
TRIAL_DIR = "trial_{number:04d}"
SEARCH_KEYS = ("storage", "study_name", "direction", "n_trials", "max_failure_rate", "sampler",
               "params")
DIRECTIONS = ("maximize", "minimize")
ATTR_RUN_DIR = "run_dir"
ATTR_WORKER = "worker"
ATTR_ERROR = "error"
ATTR_INTERRUPTED = "interrupted_before_values"


def _samplers() -> dict[str, Any]:
    """``search.sampler.kind`` -> Optuna sampler class (imported only when a search runs)."""
    from optuna.samplers import GPSampler, QMCSampler, RandomSampler, TPESampler

    return {"tpe": TPESampler, "random": RandomSampler, "qmc": QMCSampler, "gp": GPSampler}


def trial_seed(base: int, number: int) -> int:
    """Seed of one trial: a function of the study seed and the trial's number only."""
    return (int(base) * 1_000_003 + int(number)) % (2**32)


# -- the search space ------------------------------------------------------------------------
def parse_space(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``search.params`` -> (Optuna distributions by key, fixed overrides by key)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for key, value in params.items():
        text = f"{key}={value}"
        try:
            override = parser.parse_override(text)
        except Exception as exc:  # noqa: BLE001 - Hydra's grammar errors are many types
            raise ConfigError(f"search.params.{key}: cannot parse {value!r} ({exc})") from exc
        if override.is_sweep_override():
            space[key] = _distribution(key, override)
        else:
            fixed[key] = override.get_value_element_as_str()
    return space, fixed


def _distribution(key: str, override: Any) -> Any:
    """One Hydra sweep -> an Optuna distribution (the reading hydra-optuna-sweeper had)."""
    from hydra.core.override_parser.types import (
        ChoiceSweep,
        IntervalSweep,
        RangeSweep,
        Transformer,
    )
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep) and not value.shuffle:
        start, stop, step = value.start, value.stop, value.step
        if start is None or stop is None:  # Hydra's range() always has both ends
            raise ConfigError(f"search.params.{key}: {override.input_line!r} needs a start and a stop")
        if any(isinstance(v, float) for v in (start, stop, step)):
            return FloatDistribution(float(start), float(stop), step=float(step or 1))
        return IntDistribution(int(start), int(stop), step=int(step or 1))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        if value.start is None or value.end is None:
            raise ConfigError(f"search.params.{key}: {override.input_line!r} needs both ends")
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ConfigError(f"search.params.{key}: {override.input_line!r} is not a search space "
                      "tune understands: choice(...), range(a, b), interval(a, b) or "
                      "tag(log, interval(a, b))")


def as_override(key: str, value: Any) -> str:
    """A trial value as a Hydra override (floats round-trip exactly through ``repr``)."""
    if value is None or isinstance(value, (bool, str)):
        return f"{key}={json.dumps(value)}"  # null / true / "quoted"
    return f"{key}={value!r}"


# -- the search settings ---------------------------------------------------------------------
@dataclass(frozen=True)
class Search:
    """``search:`` of the composed config, checked."""

    storage: str
    study_name: str
    direction: str
    n_trials: int
    max_failure_rate: float
    sampler: dict[str, Any]
    space: dict[str, Any]
    fixed: dict[str, str]

    @classmethod
    def from_cfg(cls, cfg: DictConfig, hparams_search: str | None) -> Search:
        node = cfg.get("search")
        if node is None:
            raise ConfigError("tune needs a search: pass hparams_search=<name> (one of conf/"
                              "hparams_search/*.yaml, e.g. hparams_search=soma_optuna_tiny)")
        spec = to_dict(node)
        missing = [k for k in SEARCH_KEYS if k not in spec]
        unknown = sorted(set(spec) - set(SEARCH_KEYS))
        where = f"hparams_search={hparams_search}" if hparams_search else "search"
        if missing or unknown:
            raise ConfigError(f"{where}: search lacks {missing} / has unknown keys {unknown}; "
                              f"expected exactly {list(SEARCH_KEYS)}")
        if spec["direction"] not in DIRECTIONS:
            raise ConfigError(f"search.direction={spec['direction']!r}: expected one of "
                              f"{list(DIRECTIONS)}")
        if int(spec["n_trials"]) < 1:
            raise ConfigError(f"search.n_trials={spec['n_trials']}: must be >= 1")
        sampler = dict(spec["sampler"] or {})
        kind = sampler.get("kind")
        if kind not in _samplers():
            raise ConfigError(f"search.sampler.kind={kind!r}: expected one of {sorted(_samplers())}")
        if sampler.get("seed") is None:
            raise ConfigError("search.sampler.seed must be set: a search is reproducible only "
                              "with a fixed seed (e.g. search.sampler.seed=1234)")
        space, fixed = parse_space(spec["params"] or {})
        if not space:
            raise ConfigError(f"{where}: search.params holds no search space")
        for key in [*space, *fixed]:
            if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
                raise ConfigError(f"search.params.{key}: no such key in the composed config "
                                  "(a typo would fail every trial)")
        return cls(storage=str(spec["storage"]), study_name=str(spec["study_name"]),
                   direction=spec["direction"], n_trials=int(spec["n_trials"]),
                   max_failure_rate=float(spec["max_failure_rate"]), sampler=sampler,
                   space=space, fixed=fixed)

    def storage_file(self) -> Path:
        """The file behind the storage (the journal, or the sqlite database)."""
        if self.storage.startswith(SQLITE_PREFIX):
            return Path(self.storage[len(SQLITE_PREFIX):])
        if "://" in self.storage:
            raise ConfigError(f"search.storage={self.storage!r}: use a file path (Optuna's "
                              "JournalStorage) or a sqlite:/// URL; tune locks the study with a "
                              "file next to it")
        return Path(self.storage)

    def open_storage(self) -> Any:
        from optuna.storages import JournalStorage, RDBStorage
        from optuna.storages.journal import JournalFileBackend

        path = self.storage_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.storage.startswith(SQLITE_PREFIX):
            return RDBStorage(self.storage)
        # under the study lock (the only caller): no other writer, so Optuna's own per-write
        # lock file left by a killed process is stale (else each write waits its grace period)
        stale = path.with_name(path.name + ".lock")
        if stale.exists():
            log.info("%s: removing the journal write lock a killed process left", stale)
            stale.unlink(missing_ok=True)
        repair_journal(path)
        return JournalStorage(JournalFileBackend(str(path)))

    def sampler_for(self, number: int) -> Any:
        """A sampler seeded for trial ``number`` (TPE & co. are stateless apart from their RNG:
        they rebuild from the study's trials on every ask)."""
        options = {k: v for k, v in self.sampler.items() if k not in ("kind", "seed")}
        return _samplers()[self.sampler["kind"]](seed=trial_seed(self.sampler["seed"], number),
                                                 **options)


def repair_journal(path: Path) -> int:
    """Cut a journal back to its last complete, valid line (a process killed mid-write leaves
    a torn one, and Optuna refuses a file whose bad line has others after it). Called under the
    study lock, so no writer is active; the cut bytes are kept in ``<journal>.torn``. Returns
    the bytes cut."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    good = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            json.loads(line)
        except ValueError:
            break
        good += len(line)
    if good == len(data):
        return 0
    torn = path.with_name(path.name + ".torn")
    torn.write_bytes(data[good:])
    with path.open("r+b") as handle:
        handle.truncate(good)
    log.warning("%s: cut %d byte(s) after its last complete line (a killed write); kept in %s",
                path, len(data) - good, torn)
    return len(data) - good


@contextlib.contextmanager
def study_lock(search: Search) -> Iterator[None]:
    """Hold the study's lock file for the whole search: RUNNING trials are then stale."""
    path = search.storage_file().with_name(search.storage_file().name + LOCK_SUFFIX)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(path, blocking=False))  # exclusive, never waits
        except LockBusy:
            try:
                holder = path.read_text(encoding="utf-8").strip()
            except OSError:
                holder = ""
            raise ConfigError(f"another `somabench tune` works on this study ({path}: "
                              f"{holder or 'unknown process'}); wait for it or stop it "
                              "first") from None
        path.write_text(f"{socket.gethostname()}:{os.getpid()}\n", encoding="utf-8")
        yield


# -- one trial -------------------------------------------------------------------------------
@dataclass
class Tuner:
    """Runs the trials of one search; ``base`` are the command line's overrides."""

    base: list[str]
    search: Search
    study_dir: Path

    def trial_overrides(self, number: int, params: Mapping[str, Any]) -> list[str]:
        run_name = (self.study_dir / TRIAL_DIR.format(number=number)).as_posix()
        return [*self.base, *(f"{k}={v}" for k, v in self.search.fixed.items()),
                *(as_override(k, v) for k, v in params.items()), f"run_name={run_name}"]

    def run_trial(self, study: Any, trial: Any) -> bool:
        """Compose, run and judge one trial (an ``optuna.Trial`` whose values are drawn), then
        tell the study; True if it completed."""
        from optuna.trial import TrialState

        from somabench.config import compose
        from somabench.sweep import objective_of, start_logger
        from somabench.task import run_dir_of, run_task

        number, params = trial.number, trial.params
        cfg = compose(self.trial_overrides(number, params))
        run_dir = run_dir_of(cfg)
        trial.set_user_attr(ATTR_RUN_DIR, str(run_dir))
        log.info("trial %d: %s -> %s", number,
                 ", ".join(f"{k}={v!r}" for k, v in params.items()), run_dir)
        with _trial_log(run_dir):
            try:
                objective = objective_of(cfg, run_dir, run_task(cfg, start_logger))
                if objective is None or math.isnan(objective):
                    raise RuntimeError(f"trial {number} has no objective (judge={cfg.judge.name}); "
                                       "a search needs a judge or an optimized_metric")
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - a failed trial must not end the search
                message = f"{type(exc).__name__}: {exc}"
                log.error("trial %d failed (%s); recorded in %s", number, message, run_dir)
                trial.set_user_attr(ATTR_ERROR, message)
                study.tell(trial, state=TrialState.FAIL)
                return False
        study.tell(trial, objective)
        log.info("trial %d: objective %.4f", number, objective)
        return True


@contextlib.contextmanager
def _trial_log(run_dir: Path) -> Iterator[None]:
    """The trial's log lines also go to ``<run dir>/tune.log`` (Hydra's job log's place)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "tune.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


# -- the search ------------------------------------------------------------------------------
def tune(overrides: list[str]) -> int:
    """Run (or resume) the search the overrides compose; 0 when ``n_trials`` are finished."""
    import optuna
    from optuna.trial import TrialState

    from somabench.config import check_overrides, compose

    check_overrides(overrides)
    cfg = compose(overrides)
    hparams = next((o.split("=", 1)[1] for o in overrides if o.startswith("hparams_search=")), None)
    search = Search.from_cfg(cfg, hparams)
    study_dir = Path("optuna") / search.study_name
    tuner = Tuner(base=list(overrides), search=search, study_dir=study_dir)
    results_dir = Path(cfg.paths.output_root) / cfg.task_name / study_dir
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tune logs each trial itself
    with study_lock(search):
        study = optuna.create_study(storage=search.open_storage(), study_name=search.study_name,
                                    direction=search.direction, load_if_exists=True)
        log.info("study %s in %s: %d trial(s) so far, target %d", search.study_name,
                 search.storage, len(study.get_trials(deepcopy=False)), search.n_trials)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            _resume(study, tuner, trial)
        while True:
            trials = study.get_trials(deepcopy=False)
            finished = [t for t in trials if t.state.is_finished()
                        and not t.user_attrs.get(ATTR_INTERRUPTED)]
            failed = [t for t in finished if t.state == TrialState.FAIL]
            if finished and len(failed) / len(finished) > search.max_failure_rate:
                _write_results(study, results_dir)
                raise RunFailedError(
                    f"{len(failed)} of {len(finished)} trial(s) failed (> search.max_failure_rate="
                    f"{search.max_failure_rate}); the errors are in each trial's run.json and "
                    f"{results_dir / TRIALS_FILE}. Fix the cause, then raise search.n_trials or "
                    f"search.max_failure_rate and rerun the same command")
            if len(finished) >= search.n_trials:
                break
            study.sampler = search.sampler_for(len(trials))
            trial = study.ask(fixed_distributions=search.space)
            trial.set_user_attr(ATTR_WORKER, f"{socket.gethostname()}:{os.getpid()}")
            tuner.run_trial(study, trial)
        _write_results(study, results_dir)
    return 0


def _resume(study: Any, tuner: Tuner, frozen: Any) -> None:
    """A trial a killed process left RUNNING: run it again with its values (its run dir
    resumes per dialogue), or fail it if it died before all its values were drawn."""
    from optuna.trial import Trial, TrialState

    trial = Trial(study, frozen._trial_id)  # the live handle of a stored RUNNING trial
    if set(frozen.params) != set(tuner.search.space):
        log.warning("trial %d was interrupted before its values were drawn; marked failed",
                    frozen.number)
        trial.set_user_attr(ATTR_ERROR, "interrupted before its values were drawn")
        trial.set_user_attr(ATTR_INTERRUPTED, True)  # never ran: not a failure, not a trial
        study.tell(trial, state=TrialState.FAIL)
        return
    log.info("trial %d was interrupted (worker %s): resuming it", frozen.number,
             frozen.user_attrs.get(ATTR_WORKER, "?"))
    tuner.run_trial(study, trial)


def _write_results(study: Any, out: Path) -> None:
    """``optimization_results.yaml`` (best value + params) and ``trials.csv``."""
    from optuna.trial import TrialState

    out.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    results: dict[str, Any] = {"name": study.study_name, "direction": study.direction.name.lower(),
                               "trials": len(study.get_trials(deepcopy=False)),
                               "complete": len(complete)}
    if complete:
        best = study.best_trial
        results.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                       best_run_dir=best.user_attrs.get(ATTR_RUN_DIR))
    (out / RESULTS_FILE).write_text(OmegaConf.to_yaml(OmegaConf.create(results)), encoding="utf-8")
    study.trials_dataframe().to_csv(out / TRIALS_FILE, index=False)
    log.info("%d trial(s) complete; best %s -> %s", len(complete),
             results.get("best_value"), out / RESULTS_FILE)
