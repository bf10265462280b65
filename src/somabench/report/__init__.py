"""Reports: the paper's tables and figures from run records and judge scores.

``collect`` finds runs (an outputs dir, a sweep dir, or a W&B group) and loads them as frames;
``tables`` renders one long frame as md / LaTeX / CSV; ``figures`` draws Fig. 1-3 and 5-12;
``build`` writes every artifact whose inputs exist and lists what it skipped; ``wandb_logger``
logs one Hydra job to W&B (``logger=wandb``). CLI: ``python -m somabench report <source>``.
Derived numbers (tokens per dialogue, throughput, similarity) come from ``somabench.metrics``.
"""
