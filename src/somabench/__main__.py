"""``python -m somabench [overrides]`` runs one job (or a sweep with -m).

Subcommands: ``python -m somabench ls <method|backend|dataset|judge>`` lists registries;
``python -m somabench theory ...`` prints SOMA's theory knobs.
"""

from __future__ import annotations

import sys

SUBCOMMANDS = {"ls", "theory"}


def _ls(argv: list[str]) -> int:
    from somabench.registry import ALL, load_builtin

    load_builtin()
    kinds = argv or list(ALL)
    for kind in kinds:
        if kind not in ALL:
            from somabench.registry import did_you_mean

            print(f"error: unknown kind '{kind}'.{did_you_mean(kind, list(ALL))} "
                  f"Kinds: {', '.join(ALL)}", file=sys.stderr)
            return 2
        print(f"{kind}: {', '.join(ALL[kind].names())}")
    return 0


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] in SUBCOMMANDS:
        if argv[0] == "ls":
            sys.exit(_ls(argv[1:]))
        from somabench.soma.theory import main as theory_main

        sys.exit(theory_main(argv[1:]))

    import hydra

    from somabench.config import check_overrides, conf_dir

    if not any(a.startswith(("-m", "--multirun", "--help", "-h", "--cfg", "-c", "--info",
                             "--hydra-help", "--shell-completion")) for a in argv):
        check_overrides([a for a in argv if not a.startswith("-")])

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
    def _hydra_main(cfg):  # noqa: ANN001, ANN202 - Hydra's signature
        from somabench.sweep import run_job  # = run_task; in a multirun a failed job is recorded

        return run_job(cfg)

    _hydra_main()


if __name__ == "__main__":
    main()
