"""SOMA (soft-prompt mining, localized LoRA, gated switch, drift rollback) and its ablations.

One class, several registered names: the ablations and the switch-rule variants are config
variants (conf/method/soma_wo_adl.yaml, soma_wo_expw_adl.yaml, soma_recorded.yaml,
soma_positive_control.yaml), not code copies.
The switch logic and the LoRA adapter shared with History-Prefix / History-FT live in
``somabench.switching``; this package keeps what only SOMA does (mining, soft prompts, losses,
theory, summary, neighbours, the method class).
"""

from somabench.registry import methods

for _name in ("soma", "soma_wo_adl", "soma_wo_expw_adl", "soma_recorded", "soma_holdout",
              "soma_holdout_recorded", "soma_positive_control"):
    methods.register(_name, "somabench.soma.method:Soma")
