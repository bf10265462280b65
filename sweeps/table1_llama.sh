#!/usr/bin/env bash
# Table 1 (+ Fig. 2/5 tokens per dialogue, cost table): similarity (%) to the Original, seven
# methods x six datasets, LLaMA family, LLM judge panel.   conf/experiment/table1_llama.yaml
#
#   bash sweeps/table1_llama.sh                              # one node, jobs one after another
#   LAUNCHER=slurm bash sweeps/table1_llama.sh hydra.launcher.partition=gpu
#
# Needs: pip install -e ".[vllm,sweeps,llmlingua,routellm]"; a node with 4 x 80 GB GPUs (the
# paper's, App. B.2); hub access to the gated LLaMA weights (huggingface-cli login, HF_HUB_OFFLINE
# unset) and to the ShareGPT / Multi-Char hub datasets; OPENROUTER_API_KEY for the judge panel.
# F (LLaMA-3.1-70B) runs in vLLM with tensor parallel 4, leaving a quarter of each GPU for G
# (LLaMA-2-7B, transformers: SOMA needs its weights for soft prompts and LoRA).
# Rerunning the script resumes: finished jobs and dialogues are skipped, failed ones retried.
# Output: outputs/table1_llama/multirun/<job>/ ; tables and figures: results/table1_llama/.
source "$(dirname "$0")/_lib.sh"
need_judge_key "$@"
sweep table1_llama model.F.backend=vllm +model.F.gpu_memory_utilization=0.75 "$@"
report table1_llama
