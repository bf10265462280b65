"""Typed errors whose message is the whole story: library code raises them, only the CLI
(``somabench.commands``) turns them into one readable line and an exit code.

Why: a bad dataset line, a misspelled override or a missing model used to reach the user as a
Python traceback wrapped in Hydra's "set HYDRA_FULL_ERROR" hint, and library code called
``SystemExit``, which a sweep cannot catch as an ordinary failure. ``--debug`` (or
``HYDRA_FULL_ERROR=1``) still shows the traceback.

Exit codes (:func:`exit_code`): 1 the run failed (see run.json / errors.jsonl), 2 bad command
line or config, 3 bad dataset, 4 missing model or asset, 5 the run dir holds another run.

This module is a leaf: it imports nothing from somabench.
"""

from __future__ import annotations

import sys
from typing import ClassVar


class SomabenchError(Exception):
    """Base of the errors the CLI prints as one line without a traceback."""

    exit_code: ClassVar[int] = 1


class ConfigError(SomabenchError, ValueError):
    """A config value, override or command line is wrong; the message names the key and fix."""

    exit_code = 2


class AssetMissingError(SomabenchError, RuntimeError):
    """A model or asset is not on this machine (or is corrupt); the message gives the fetch
    command."""

    exit_code = 4


class RunDirConflict(SomabenchError, RuntimeError):
    """The run directory holds records of a different config; resuming would mix results."""

    exit_code = 5


class RunFileError(SomabenchError, ValueError):
    """A run-directory file (``run.json``, a JSONL line) is corrupt or was written by a newer
    somabench; the message names the file (and line)."""

    exit_code = 1


class RunFailedError(SomabenchError, RuntimeError):
    """More dialogues (or judge calls) failed than ``fail_on_error`` tolerates."""

    exit_code = 1


DATASET_EXIT_CODE = 3


class DatasetError(SomabenchError, ValueError):
    """A dataset file, row or config is invalid; the message says where and what to fix.

    ``where`` is ``"<file>:<line>"`` (or ``"<hub id> row <i>"``, ``"dialogue '<id>'"``),
    ``field`` the offending field (``"turns[2].user"``); both are ``None`` for config-level
    errors. Defined here with the other typed errors (the data layer raises it and
    ``somabench.data`` re-exports it), so this module imports nothing of the data layer.
    """

    exit_code = DATASET_EXIT_CODE

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None):
        self.where = where
        self.field = field
        prefix = where + ": " if where else ""
        prefix += f"field '{field}': " if field else ""
        super().__init__(prefix + message)

# Errors of other layers that do not derive from SomabenchError; each is looked up only if its
# module is already imported, so this module stays a leaf.
FOREIGN: dict[str, int] = {
    "somabench.registry:RegistryError": ConfigError.exit_code,
    "somabench.backends:ModelLoadError": AssetMissingError.exit_code,
    "somabench.judges.base:JudgeError": RunFailedError.exit_code,
    "somabench.judges.prompting:PromptError": ConfigError.exit_code,
    "somabench.backends.base:BackendError": RunFailedError.exit_code,
}


def exit_code(exc: BaseException) -> int | None:
    """The CLI exit code of a readable error, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, SomabenchError):
        return exc.exit_code
    for path, code in FOREIGN.items():
        module_name, _, attr = path.partition(":")
        module = sys.modules.get(module_name)
        cls = getattr(module, attr, None) if module is not None else None
        if isinstance(cls, type) and isinstance(exc, cls):
            return code
    return None


__all__ = ["AssetMissingError", "ConfigError", "DatasetError", "RunDirConflict",
           "RunFailedError", "RunFileError", "SomabenchError", "exit_code"]
