#!/usr/bin/env bash
# Table 3 (App. F.1, + Fig. 6 tokens): Table 1 for the Qwen family (F = Qwen-3-8B,
# G = Qwen-3-0.6B): same methods, datasets, judge and data splits.
# conf/experiment/table3_qwen.yaml
#
#   bash sweeps/table3_qwen.sh
#   LAUNCHER=slurm bash sweeps/table3_qwen.sh hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1
#
# Needs: pip install -e ".[vllm,sweeps,llmlingua,routellm]"; one GPU per job (8B + 0.6B fit on
# one 80 GB GPU); hub access (models, ShareGPT / Multi-Char); OPENROUTER_API_KEY for the judges.
# Rerunning resumes. Output: outputs/table3_qwen/ ; tables and figures: results/table3_qwen/.
source "$(dirname "$0")/_lib.sh"
need_judge_key "$@"
sweep table3_qwen model.F.backend=vllm +model.F.gpu_memory_utilization=0.6 "$@"
report table3_qwen
