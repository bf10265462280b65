#!/usr/bin/env bash
# Fig. 3 (LLaMA) and Fig. 9 (Qwen, App. F.3): SOMA vs SOMA w/o ADL vs SOMA w/o ExpW+ADL on six
# datasets.   conf/experiment/ablation_llama.yaml, conf/experiment/ablation_qwen.yaml
#
#   bash sweeps/ablations.sh              # both families
#   FAMILIES=llama bash sweeps/ablations.sh
#
# Needs what sweeps/table1_llama.sh (LLaMA) and sweeps/table3_qwen.sh (Qwen) need. The Original
# reference is shared with those tables (same paths.reference_root and generation settings), so
# after them only the three SOMA variants run. Rerunning resumes.
# Output: outputs/ablation_{llama,qwen}/ ; figures: results/ablation_{llama,qwen}/.
source "$(dirname "$0")/_lib.sh"
need_judge_key "$@"
for family in ${FAMILIES:-llama qwen}; do
  if [[ $family == llama ]]; then
    sweep ablation_llama model.F.backend=vllm +model.F.gpu_memory_utilization=0.75 "$@"
  else
    sweep ablation_qwen model.F.backend=vllm +model.F.gpu_memory_utilization=0.6 "$@"
  fi
  report "ablation_$family"
done
