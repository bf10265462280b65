#!/usr/bin/env bash
# Fig. 11 / 12 (App. F.5): SOMA's similarity after switching at warm-start window W = 1..15,
# per dataset, and the plateau score vs. the best W (Pearson r).
# conf/experiment/warm_window.yaml (90 SOMA jobs: 15 W values x 6 datasets)
#
#   bash sweeps/warm_window.sh
#   LAUNCHER=slurm bash sweeps/warm_window.sh hydra.launcher.partition=gpu
#   bash sweeps/warm_window.sh dataset=mathmt,craigslist        # a subset of the datasets
#
# Needs what sweeps/table1_llama.sh needs. The Original reference is shared with Table 1.
# Rerunning resumes. Output: outputs/warm_window/ ; figures: results/warm_window/.
source "$(dirname "$0")/_lib.sh"
need_judge_key "$@"
sweep warm_window model.F.backend=vllm +model.F.gpu_memory_utilization=0.75 "$@"
report warm_window
