#!/usr/bin/env bash
# Optuna search over SOMA's App. B.2 ranges (conf/hparams_search/soma_optuna.yaml), run by
# `somabench tune` (Optuna >= 4, ask-and-tell over the compose API): TPE with a fixed seed,
# re-seeded per trial number; the study in an Optuna journal file
# (outputs/<task_name>/optuna/<study_name>.journal), one trial run dir per trial.
#
#   bash sweeps/soma_optuna.sh dataset=mathmt                    # 20 trials (LLaMA, judge panel)
#   bash sweeps/soma_optuna.sh dataset=mathmt search.n_trials=40 token_penalty=0.001
#   TINY=1 bash sweeps/soma_optuna.sh dataset=mathmt             # offline, CPU, tiny family
#
# Running it again (or after a kill) finishes the study up to n_trials; a finished trial is never
# rerun. Best value and parameters: outputs/<task_name>/optuna/<study_name>/optimization_results.yaml,
# every trial: trials.csv beside it. Tune on dialogues you do not report on (dataset.sample, seed).
source "$(dirname "$0")/_lib.sh"
if [[ -n "${TINY:-}" ]]; then
  export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
  echo "+ $PY -m somabench tune hparams_search=soma_optuna_tiny $*"
  "$PY" -m somabench tune hparams_search=soma_optuna_tiny "$@"
else
  need_judge_key "$@"
  echo "+ $PY -m somabench tune hparams_search=soma_optuna $*"
  "$PY" -m somabench tune hparams_search=soma_optuna \
    model.F.backend=vllm +model.F.gpu_memory_utilization=0.75 "$@"
fi
