"""JSON Schemas of the three record files and the run header, generated from the dataclasses
that write them.

Why generated: one owner per concept. ``TurnRecord`` / ``DialogueRecord`` (records.py) and
``ScoreLine`` (judges/base.py) define the lines, ``RunHeader`` (rundir.py) the header; this turns their fields and type hints into
JSON Schema (draft 2020-12) for readers outside Python. ``docs/schemas/*.schema.json`` are the
committed output; tests/test_schemas.py fails when they drift from the dataclasses and
validates real lines against them. Regenerate: ``python -m somabench.schemas docs/schemas``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return {}
    if origin in (Union, types.UnionType):
        options = [_type_schema(a, defs) for a in args]
        return {"anyOf": options}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (dict, typing.Dict):  # noqa: UP006 - typing.Dict from old hints
        return {"type": "object", "additionalProperties": _type_schema(args[1], defs) if args else {}}
    if origin in (list, tuple, typing.List):  # noqa: UP006
        return {"type": "array", "items": _type_schema(args[0], defs) if args else {}}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        defs.setdefault(tp.__name__, None)
        if defs[tp.__name__] is None:
            defs[tp.__name__] = _object(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    if tp in simple:
        return {"type": simple[tp]}
    return {}


def _object(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls)
              if not f.name.startswith("_") and f.metadata.get("on_disk", True)]
    required = [f.name for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    props = {}
    for f in fields:
        prop = _type_schema(hints[f.name], defs)
        doc = _field_doc(cls, f.name)
        if doc:
            prop = {**prop, "description": doc}
        props[f.name] = prop
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": True}


def _field_doc(cls: type, name: str) -> str | None:
    """The docstring under a dataclass field (the project's convention), if any."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return None
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and node.target.id == name and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            return " ".join(after.value.value.split())
    return None


def schema_of(cls: type, title: str) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    body = _object(cls, defs)
    out = {"$schema": DRAFT, "title": title, "description": (cls.__doc__ or "").split("\n\n")[0].strip(),
           **body}
    if defs:
        out["$defs"] = {k: v for k, v in sorted(defs.items())}
    return out


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema, for records.jsonl (turn lines), dialogues.jsonl, scores.jsonl and
    the run header."""
    from somabench.judges.base import ScoreLine
    from somabench.records import DialogueRecord, TurnRecord
    from somabench.rundir import RUN_HEADER, RunHeader

    return {"records.schema.json": schema_of(TurnRecord, "records.jsonl: one line per turn"),
            "dialogues.schema.json": schema_of(DialogueRecord, "dialogues.jsonl: one line per dialogue"),
            "scores.schema.json": schema_of(ScoreLine, "scores.jsonl: one line per judged unit"),
            "run.schema.json": schema_of(RunHeader, f"{RUN_HEADER}: the run header")}


def write(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in all_schemas().items():
        path = out_dir / name
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    """``python -m somabench.schemas [OUT_DIR]``: (re)write the schemas (default docs/schemas)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m somabench.schemas", description=main.__doc__)
    parser.add_argument("out_dir", nargs="?", default="docs/schemas")
    for path in write(Path(parser.parse_args(argv).out_dir)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
