#!/usr/bin/env bash
# The study of issue 22 (conf/experiment/study_tiny_qwen.yaml): per dataset, the methods that do
# not switch, then the switching ones with the dataset's warm window W, then the report.
# Rerunning resumes (finished dialogues and judge calls are never redone); STAGES picks what runs.
#
#   nohup bash sweeps/study_tiny_qwen.sh > study.log 2>&1 &
#   STAGES="remedi" bash sweeps/study_tiny_qwen.sh            # one dataset
#   METHODS_SWITCH=soma_holdout bash sweeps/study_tiny_qwen.sh  # a subset of switching methods
#
# Stages (each dataset >= 30 sessions after its filters; W + m + 1 <= turns so G can serve):
#   remedi      ReMeDi consultations, 8 turns, W = 3 (G can serve turns 6-8)
#   mtbench101  MT-Bench-101 tasks built to refer back (SI, PI, AR, CM), 5 turns, W = 2 (turn 5)
#   mathmt      MATH-500 sessions, 8 independent problems: the NEGATIVE CONTROL, W = 3
#   tiny        ReMeDi again with model=tiny (SmolLM2 G, another tokenizer): the contrast row
#   serving     the serving-aware baselines of issue 26 on ReMeDi: the Original with F's prefix
#               cache (priced at the cached-input rate) and kvpress's StreamingLLM and SnapKV at
#               50/75 % (run by KV_PY, default .venv-kvpress/bin/python: make kvpress-env), after
#               kvpress_control (hooks on, 0 % removed: the kvpress venv's noise floor); two
#               processes of one thread each (KV_PROCS=1: one process)
#   dose        dose-response of the adaptation budget on ReMeDi (soma_holdout_recorded, one knob
#               at a time around the defaults, all within App. B.2's ranges): LoRA steps 10/20/40,
#               LoRA lr 5e-4/1e-3/2e-3, rank 4/8/16, W 2/3/4 (the middle values are the main run)
# Time on 2 idle CPU cores: see docs/results.md (measured per method).
source "$(dirname "$0")/_lib.sh"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
STAGES=${STAGES:-"remedi mtbench101 mathmt"}
METHODS_PLAIN=${METHODS_PLAIN:-original,surrogate,llmlingua1_offline,routellm_offline_random}
METHODS_SWITCH=${METHODS_SWITCH:-soma_holdout,soma_holdout_recorded,soma_recorded,soma,history_prefix,history_ft,soma_positive_control}

for stage in $STAGES; do
  case $stage in
    remedi)     data=(dataset=remedi dataset.min_turns=8 dataset.truncate_turns=8); w=3 ;;
    mtbench101) data=(dataset=mtbench101 dataset.min_turns=5 dataset.truncate_turns=5); w=2 ;;
    mathmt)     data=(dataset=mathmt "dataset.tasks=[math]" dataset.min_turns=8 dataset.truncate_turns=8
                      dataset.context_dependent_only=false); w=3 ;;
    tiny)       data=(model=tiny dataset=remedi dataset.min_turns=8 dataset.truncate_turns=8); w=3 ;;
    serving)    data=(dataset=remedi dataset.min_turns=8 dataset.truncate_turns=8)
                sweep study_tiny_qwen "${data[@]}" method=original_prefix_cache "$@"
                # A press serves one prompt at a time (decode-bound): two single-thread processes
                # did nearly twice the work of one two-thread process here (docs/results.md). KV_PROCS=1
                # runs the five one after another with torch's default threads.
                kv=(study_tiny_qwen "${data[@]}")
                if [[ ${KV_PROCS:-2} == 1 ]]; then
                  PY=${KV_PY:-.venv-kvpress/bin/python} sweep "${kv[@]}" \
                    "method=kvpress_control,kvpress_streaming_llm_50,kvpress_snapkv_50,kvpress_streaming_llm_75,kvpress_snapkv_75" "$@"
                else
                  # threads from the environment, not model.F.num_threads: an override would name
                  # new job dirs instead of resuming the existing ones
                  OMP_NUM_THREADS=1 PY=${KV_PY:-.venv-kvpress/bin/python} sweep "${kv[@]}" \
                    "method=kvpress_control,kvpress_streaming_llm_50,kvpress_streaming_llm_75" "$@" & first=$!
                  OMP_NUM_THREADS=1 PY=${KV_PY:-.venv-kvpress/bin/python} sweep "${kv[@]}" \
                    "method=kvpress_snapkv_50,kvpress_snapkv_75" "$@" & second=$!
                  failed=0; wait $first || failed=1; wait $second || failed=1
                  (( failed == 0 )) || { echo "error: a kvpress sweep failed (see above)" >&2; exit 1; }
                fi
                continue ;;
    dose)       data=(dataset=remedi dataset.min_turns=8 dataset.truncate_turns=8)
                for axis in "method.lora.max_steps=10,40" "method.lora.lr=5e-4,2e-3" \
                            "method.lora.rank=4,16"; do
                  sweep study_tiny_qwen "${data[@]}" method=soma_holdout_recorded \
                    "method.switch.warm_window=3" "$axis" "$@"
                done
                sweep study_tiny_qwen "${data[@]}" method=soma_holdout_recorded \
                  "method.switch.warm_window=2,4" "$@"
                continue ;;
    *) echo "error: unknown stage $stage (remedi | mtbench101 | mathmt | tiny | serving | dose)" >&2; exit 2 ;;
  esac
  sweep study_tiny_qwen "${data[@]}" "method=$METHODS_PLAIN" "$@"
  # ++: the multirun's first compose uses the root default method (no switch node) before the
  # method axis applies
  sweep study_tiny_qwen "${data[@]}" "method=$METHODS_SWITCH" "++method.switch.warm_window=$w" "$@"
done
report study_tiny_qwen
