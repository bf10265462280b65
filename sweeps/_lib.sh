# Shared by the sweeps/*.sh recipes (sourced, not run). Environment knobs:
#   LAUNCHER   basic (default: one job after another) | parallel (joblib) | slurm | ray_cluster
#   PY         the python that has somabench installed (default: python)
#   SOMABENCH_OUTPUTS  output root (default: outputs; read by conf/paths/default.yaml)
# Every recipe passes its extra arguments ("$@") to the sweep as Hydra overrides, e.g.
#   LAUNCHER=slurm bash sweeps/table1_llama.sh hydra.launcher.partition=gpu dataset=mathmt limit=20
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-python}
LAUNCHER=${LAUNCHER:-basic}
OUT=${SOMABENCH_OUTPUTS:-outputs}

need_judge_key() {  # the paper's judge panel goes through OpenRouter by default (conf/judge/paper.yaml)
  case " $* " in *" judge="*) return 0 ;; esac
  if [[ -z "${OPENROUTER_API_KEY:-}" ]]; then
    echo "error: judge=paper needs OPENROUTER_API_KEY (or point the judges elsewhere, see conf/judge/paper.yaml," >&2
    echo "       or judge later: pass judge=none now, then python -m somabench judge <run dir> judge=paper)" >&2
    exit 2
  fi
}

sweep() {  # sweep <experiment> [overrides...]: run (or resume) the experiment's multirun
  local experiment=$1; shift
  echo "+ $PY -m somabench -m experiment=$experiment hydra/launcher=$LAUNCHER $*"
  "$PY" -m somabench -m "experiment=$experiment" "hydra/launcher=$LAUNCHER" "$@"
}

report() {  # report <experiment>: tables + figures of every run of the experiment
  local experiment=$1
  echo "+ $PY -m somabench report $OUT/$experiment --out results/$experiment"
  "$PY" -m somabench report "$OUT/$experiment" --out "results/$experiment"
}
