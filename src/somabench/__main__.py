"""``python -m somabench [COMMAND] [ARGS]``; bare Hydra overrides run one job (or a sweep with
``-m``), exactly as ``python -m somabench run ...``. ``python -m somabench help`` lists the
commands; the dispatcher lives in ``somabench.commands``."""

from __future__ import annotations

import sys

from somabench.commands import main

if __name__ == "__main__":
    sys.exit(main())
