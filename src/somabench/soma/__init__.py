"""SOMA (soft-prompt mining, localized LoRA, gated switch, drift rollback) and its ablations.

One class, three registered names: the ablations are config variants
(conf/method/soma_wo_adl.yaml, conf/method/soma_wo_expw_adl.yaml), not code copies.
The switch logic shared with History-Prefix / History-FT lives in ``soma.switching``.
"""

from somabench.registry import methods

for _name in ("soma", "soma_wo_adl", "soma_wo_expw_adl"):
    methods.register(_name, "somabench.soma.method:Soma")
