#!/usr/bin/env bash
# Optuna search over SOMA's App. B.2 ranges (conf/hparams_search/soma_optuna.yaml): TPE with a
# fixed seed, a sqlite study under outputs/soma_optuna/optuna/study.sqlite.
#
#   bash sweeps/soma_optuna.sh dataset=mathmt                    # 20 trials (LLaMA, judge panel)
#   bash sweeps/soma_optuna.sh dataset=mathmt hydra.sweeper.n_trials=40 token_penalty=0.001
#   TINY=1 bash sweeps/soma_optuna.sh dataset=mathmt             # offline, CPU, tiny family
#
# Running it again adds n_trials more trials to the same study (resume). Best parameters:
# outputs/<task_name>/optuna/<time>/optimization_results.yaml; every trial: the sqlite study
# (optuna.load_study(study_name=..., storage="sqlite:///outputs/soma_optuna/optuna/study.sqlite")).
# Tune on dialogues you do not report on (e.g. dataset.sample=40 seed=1 limit=20).
source "$(dirname "$0")/_lib.sh"
if [[ -n "${TINY:-}" ]]; then
  export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
  echo "+ $PY -m somabench hparams_search=soma_optuna_tiny hydra/launcher=$LAUNCHER $*"
  "$PY" -m somabench hparams_search=soma_optuna_tiny "hydra/launcher=$LAUNCHER" "$@"
else
  need_judge_key "$@"
  echo "+ $PY -m somabench hparams_search=soma_optuna hydra/launcher=$LAUNCHER $*"
  "$PY" -m somabench hparams_search=soma_optuna "hydra/launcher=$LAUNCHER" \
    model.F.backend=vllm +model.F.gpu_memory_utilization=0.75 "$@"
fi
