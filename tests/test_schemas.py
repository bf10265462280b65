"""docs/schemas/*.schema.json: generated from the record dataclasses (no drift) and valid for
real lines: a run of the testing.fake backend and the report fixture's score lines."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from somabench.schemas import all_schemas

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "docs" / "schemas"


@pytest.mark.parametrize("name", sorted(all_schemas()))
def test_committed_schema_matches_the_dataclasses(name: str) -> None:
    committed = json.loads((SCHEMAS / name).read_text())
    assert committed == all_schemas()[name], "regenerate: python -m somabench.schemas docs/schemas"
    jsonschema.Draft202012Validator.check_schema(committed)


def test_real_lines_validate(tmp_path: Path) -> None:
    from somabench.config import compose
    from somabench.task import run_task

    cfg = compose(["model.F.backend=testing.fake", "model.G.backend=testing.fake", "judge=embedding",
                   "progress=false", "method=surrogate", "limit=1",
                   f"paths.output_root={tmp_path / 'o'}", f"cache.path={tmp_path / 'c.sqlite'}"])
    run_task(cfg)
    run_dir = Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name
    schemas = all_schemas()
    for file, schema in (("records.jsonl", "records.schema.json"),
                         ("dialogues.jsonl", "dialogues.schema.json"),
                         ("scores.jsonl", "scores.schema.json")):  # real embedding-judge lines
        rows = [json.loads(x) for x in (run_dir / file).read_text().splitlines() if x.strip()]
        assert rows
        for row in rows:
            jsonschema.validate(row, schemas[schema])
    header = json.loads((run_dir / "run.json").read_text())
    jsonschema.validate(header, schemas["run.schema.json"])
    with pytest.raises(jsonschema.ValidationError):  # a status outside RunStatus is caught
        jsonschema.validate(dict(header, status="done"), schemas["run.schema.json"])
    lines = [json.loads(x) for x in (run_dir / "scores.jsonl").read_text().splitlines() if x.strip()]
    bad = dict(lines[0], turn="zero")  # a wrong type is caught
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schemas["scores.schema.json"])
