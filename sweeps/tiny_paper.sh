#!/usr/bin/env bash
# The whole study at tiny scale, offline, on CPU (what `make paper-tiny` runs): every method and
# ablation on three bundled datasets with the tiny model family and the embedding-proxy judge.
# conf/experiment/tiny_paper.yaml. About 1.5 h on 2 CPU cores (limit=1: ~50 min); rerunning resumes.
#
#   bash sweeps/tiny_paper.sh
#   LAUNCHER=parallel bash sweeps/tiny_paper.sh hydra.launcher.n_jobs=2     # more cores
#
# Needs: make assets (the tiny models), pip install -e ".[sweeps,llmlingua]". No GPU, no network.
# Tables and figures: results/tiny_paper/.
source "$(dirname "$0")/_lib.sh"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
sweep tiny_paper "$@"
report tiny_paper
