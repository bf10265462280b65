"""The command line, one package at the top: the dispatcher (``dispatch``) and one module per
command, each a ``main(argv) -> int`` that parses its arguments and calls the library.

Why a package of its own: a command may import anything below it, and nothing in the library
imports a command (checked by import-linter, tests/test_layers.py), so the import graph has no
cycle through the entry point. ``python -m somabench <command>`` is the one way in.
"""

from __future__ import annotations

from somabench.commands.dispatch import COMMANDS, Command, dispatch, guard, main, usage

__all__ = ["COMMANDS", "Command", "dispatch", "guard", "main", "usage"]
