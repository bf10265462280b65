"""``python -m somabench run [overrides]`` (or bare overrides): one Hydra job, or a sweep with
``-m``. The overrides are checked before Hydra composes them, so a typo is one line."""

from __future__ import annotations

import sys

from somabench.commands.dispatch import error_line, readable_exit

HYDRA_ONLY_FLAGS = ("-m", "--multirun", "--help", "-h", "--cfg", "-c", "--info", "--hydra-help",
                    "--shell-completion", "--resolve", "-p", "--package")


def main(argv: list[str]) -> int:
    """``run [overrides]``: preflight the overrides, then hand them to Hydra."""
    import hydra

    from somabench.config import check_overrides, conf_dir

    if not any(a.startswith(HYDRA_ONLY_FLAGS) for a in argv):
        check_overrides([a for a in argv if not a.startswith("-")])
    sys.argv = [sys.argv[0] or "somabench", *argv]  # Hydra reads its arguments from sys.argv

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
    def _hydra_main(cfg):  # noqa: ANN001, ANN202 - Hydra's signature
        from somabench.sweep import run_job  # in a multirun a failed job is recorded, not raised

        try:
            return run_job(cfg)
        except Exception as exc:
            code = readable_exit(exc)
            if code is None:
                raise
            # Raised past Hydra's error report (it catches Exception only): one line, no trace.
            print(error_line(exc), file=sys.stderr)
            raise SystemExit(code) from None

    _hydra_main()
    return 0
