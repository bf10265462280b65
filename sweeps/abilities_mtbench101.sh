#!/usr/bin/env bash
# Fig. 10 (App. F.4): MT-Bench-101 ability scores (0-10) per method, LLaMA family: the judge
# panel scores every answer with the ability prompts (judges/prompts/ability_*_v1.json) besides
# the similarity prompt.   conf/experiment/abilities_mtbench101.yaml
#
#   bash sweeps/abilities_mtbench101.sh
#
# Needs what sweeps/table1_llama.sh needs (MT-Bench-101 is bundled: no dataset download).
# Ability judging is 8 prompts per answer: about 8x the judge calls of Table 1 on this dataset.
# Rerunning resumes. Output: outputs/abilities_mtbench101/ ; figure: results/abilities_mtbench101/.
source "$(dirname "$0")/_lib.sh"
need_judge_key "$@"
sweep abilities_mtbench101 model.F.backend=vllm +model.F.gpu_memory_utilization=0.75 "$@"
report abilities_mtbench101
