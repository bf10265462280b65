"""Baseline methods (installed as ``somabench.baselines``); each registers itself by name."""

from somabench.registry import methods

methods.register("original", "somabench.baselines.original:Original")
methods.register("original_prefix_cache", "somabench.baselines.original:OriginalPrefixCache")
for _ratio in (50, 75):  # KV-cache compression (kvpress venv): two presses x two ratios
    for _press in ("streaming_llm", "snapkv"):
        methods.register(f"kvpress_{_press}_{_ratio}", "somabench.baselines.original:OriginalKVPress")
methods.register("kvpress_control", "somabench.baselines.original:OriginalKVPress")  # 0 % removed
methods.register("surrogate", "somabench.baselines.surrogate:Surrogate")
methods.register("history_prefix", "somabench.baselines.history_prefix:HistoryPrefix")
methods.register("history_ft", "somabench.baselines.history_ft:HistoryFT")
methods.register("llmlingua2", "somabench.baselines.llmlingua2:LLMLingua2")
methods.register("llmlingua1_offline", "somabench.baselines.llmlingua2:LLMLingua1Offline")
methods.register("routellm", "somabench.baselines.routellm:RouteLLM")
methods.register("routellm_offline_random", "somabench.baselines.routellm:RouteLLMOfflineRandom")
