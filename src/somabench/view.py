"""``python -m somabench view <run dir or outputs dir>... [--out FILE]``: one static HTML page.

Why: numbers in a table hide what the answers look like. The page puts, per turn, the user
message, the Original's answer and each method's answer side by side, with who served it (F/G),
the gate's cosine and Delta, each judge's score and reason, tokens and latency, and a word-level
diff against the Original. It is one self-contained file (inline CSS and JS, no network, no
server): it opens from disk and can be attached to an issue.
"""

from __future__ import annotations

import difflib
import html
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from somabench.errors import ConfigError
from somabench.records import TurnRecord, load_turns, post_switch_flags
from somabench.report.collect import run_scores
from somabench.rundir import (
    REFERENCE_META,
    find_run_dirs,
    has_header,
    read_header,
    resolve_reference,
)

DEFAULT_NAME = "view.html"
REASON_CHARS = 400  # a judge's raw output shown in full inside <details>; its summary is cut here
ORIGINAL = "Original"


@dataclass
class Answer:
    """One method's answer to one turn, with everything the page shows about it."""

    label: str
    record: TurnRecord
    post_switch: bool
    judges: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Turn:
    user: str
    original: str | None = None
    answers: dict[str, Answer] = field(default_factory=dict)


@dataclass
class ViewData:
    sources: list[str]
    labels: list[str]
    datasets: list[str]
    dialogues: dict[tuple[str, str], dict[int, Turn]]
    """(dataset, dialogue_id) -> turn index -> :class:`Turn`."""


def run_dirs_of(paths: list[str | Path]) -> list[Path]:
    """Every run dir under the given paths (each a run dir or a folder of them)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ConfigError(f"{path} does not exist; pass run dirs or an outputs dir")
        dirs = [d for d in find_run_dirs(path) if d not in found]
        if not dirs:
            raise ConfigError(f"{path} holds no run (no records.jsonl under it)")
        found.extend(dirs)
    return found


def _labels(run_dirs: list[Path], methods: dict[Path, str]) -> dict[Path, str]:
    """The method name, made unique with the run dir's path where two runs share it."""
    count: dict[str, int] = defaultdict(int)
    for d in run_dirs:
        count[methods[d]] += 1
    return {d: methods[d] if count[methods[d]] == 1 else f"{methods[d]} ({d.parent.name}/{d.name})"
            for d in run_dirs}


def collect(paths: list[str | Path]) -> ViewData:
    """Read records, the Original's answers (the runs' references) and the judges' lines."""
    found = run_dirs_of(paths)
    records = {d: load_turns(d) for d in found}
    found = [d for d in found if records[d]]
    if not found:
        raise ConfigError(f"no turn records in {', '.join(map(str, paths))}")
    references = [d for d in found if _is_reference(d, records[d])]
    run_dirs = [d for d in found if d not in references] or references  # a reference alone: shown
    labels = _labels(run_dirs, {d: records[d][0].method for d in run_dirs})
    originals: dict[tuple[str, str, int], str] = {}
    dialogues: dict[tuple[str, str], dict[int, Turn]] = defaultdict(dict)
    for run_dir in run_dirs:
        ref = resolve_reference(run_dir, read_header(run_dir))
        for rec in load_turns(ref) if ref is not None else []:
            if rec.status == "ok":
                originals.setdefault((rec.dataset, rec.dialogue_id, rec.turn), rec.response)
    for run_dir in [*references, *run_dirs]:  # the Original's own records where no run names them
        for rec in records[run_dir]:
            if rec.method == "original" and rec.status == "ok":
                originals.setdefault((rec.dataset, rec.dialogue_id, rec.turn), rec.response)
    for run_dir in run_dirs:
        judged = _judge_lines(run_dir)
        by_dialogue: dict[tuple[str, str], list[TurnRecord]] = defaultdict(list)
        for rec in records[run_dir]:
            by_dialogue[(rec.dataset, rec.dialogue_id)].append(rec)
        for key, recs in by_dialogue.items():
            recs.sort(key=lambda r: r.turn)
            for rec, post in zip(recs, post_switch_flags(recs), strict=True):
                turn = dialogues[key].setdefault(rec.turn, Turn(user=rec.user))
                turn.original = originals.get((rec.dataset, rec.dialogue_id, rec.turn))
                turn.answers[labels[run_dir]] = Answer(labels[run_dir], rec, post,
                                                       judged.get((rec.dialogue_id, rec.turn), []))
    return ViewData(sources=[str(p) for p in paths], labels=[labels[d] for d in run_dirs],
                    datasets=sorted({k[0] for k in dialogues}), dialogues=dict(sorted(dialogues.items())))


def _is_reference(run_dir: Path, records: list[TurnRecord]) -> bool:
    """A shared Original reference (no run.json; as ``report.collect`` tells them apart)."""
    return (not has_header(run_dir)
            and ((run_dir / REFERENCE_META).exists() or records[0].method == "original"))


def _judge_lines(run_dir: Path) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """(dialogue_id, turn) -> the current panels' score lines (superseded versions left out)."""
    scores, _ = run_scores(run_dir)
    out: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in scores.to_dict("records") if not scores.empty else []:
        out[(str(row["dialogue_id"]), int(row["turn"]))].append(row)
    return out


# -- rendering ------------------------------------------------------------------------------------
# A "word" for the diff: whitespace, one CJK character (Chinese/Japanese text has no spaces:
# ReMeDi is Chinese; a whole sentence would otherwise be one word), or a run of other characters.
_TOKEN = re.compile(r"\s+|[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]"
                    r"|[^\s\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]+")


def word_diff(original: str, answer: str) -> str:
    """``answer`` as HTML with the words the Original lacks in <ins> and the Original's words it
    lacks in <del> (difflib over words and the whitespace between them; CJK per character)."""
    a, b = _TOKEN.findall(original), _TOKEN.findall(answer)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        old, new = html.escape("".join(a[i1:i2])), html.escape("".join(b[j1:j2]))
        if op == "equal":
            out.append(new)
            continue
        if op in ("delete", "replace") and old.strip():
            out.append(f"<del>{old}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{new}</ins>" if new.strip() else new)
    return "".join(out)


def disagrees(original: str | None, answer: str) -> bool:
    """The answer's words differ from the Original's (whitespace aside)."""
    return original is not None and original.split() != answer.split()


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else format(float(value), fmt)


def _facts(ans: Answer) -> str:
    rec = ans.record
    served = rec.served_by.split("+")[0]
    usage = rec.tokens.get(served)
    gate = rec.gate or {}
    parts = [f'<span class="who who-{html.escape(served)}">{html.escape(rec.served_by)}</span>']
    if usage is not None:
        cached = f" ({usage.cached_prompt} cached)" if usage.cached_prompt else ""
        parts.append(f"tokens {usage.prompt if usage.prompt is not None else '–'}{cached}"
                     f" → {usage.completion if usage.completion is not None else '–'}")
    press = (rec.extra or {}).get("kv_press")
    if press:  # KV-cache compression (backends/kv_press.py)
        parts.append(f"KV kept {press.get('prompt_kv_kept')}" if press.get("applied")
                     else "press skipped (prompt within its window)")
    s = rec.seconds
    parts.append(f"TTFT {_num(s.get('ttft'), '.2f')} s · latency {_num(s.get('latency'), '.2f')} s")
    if gate.get("score") is not None:
        parts.append(f"gate cos {_num(gate.get('score'), '.3f')} (thr {_num(gate.get('threshold'), '.3f')})")
    if gate.get("Delta") is not None:
        parts.append(f"Δ {_num(gate.get('Delta'), '+.3f')}")
    if gate.get("switch_turn") == rec.turn:
        parts.append('<span class="flag">switch</span>')
    if gate.get("rollback"):
        parts.append('<span class="flag">rollback</span>')
    if rec.cached:
        parts.append("cached")
    if rec.status != "ok":
        parts.append(f'<span class="flag">{html.escape(rec.status)}: {html.escape(rec.error or "")}</span>')
    return " · ".join(parts)


def _judges(ans: Answer) -> str:
    items = []
    for line in sorted(ans.judges, key=lambda r: (str(r.get("panel")), str(r.get("judge")), str(r.get("metric")))):
        ok = line.get("status") == "ok" and line.get("score") is not None
        score = f"{float(line['score']):g}" if ok else str(line.get("status"))
        reason = str(line.get("raw") or line.get("error") or "")
        head = (f'{html.escape(str(line.get("judge")))} <small>{html.escape(str(line.get("metric")))}'
                f'@{html.escape(str(line.get("panel")))}</small>: <b>{html.escape(score)}</b>')
        short = html.escape(reason[:REASON_CHARS] + ("…" if len(reason) > REASON_CHARS else ""))
        items.append(f'<details class="judge"><summary>{head}</summary><pre>{html.escape(reason)}</pre></details>'
                     if len(reason) > REASON_CHARS else
                     f'<div class="judge">{head}{" — " + short if short else ""}</div>')
    return "".join(items)


def _cell(ans: Answer, original: str | None) -> str:
    text = ans.record.response
    differs = disagrees(original, text)
    body = word_diff(original, text) if original is not None else html.escape(text)
    return (f'<div class="cell" data-method="{html.escape(ans.label)}" data-post="{int(ans.post_switch)}" '
            f'data-disagrees="{int(differs)}"><h4>{html.escape(ans.label)}</h4>'
            f'<div class="facts">{_facts(ans)}</div><div class="text">{body}</div>'
            f'<div class="judges">{_judges(ans)}</div></div>')


def render(data: ViewData) -> str:
    """The whole page as one string."""
    blocks = []
    for (dataset, dialogue_id), turns in data.dialogues.items():
        rows = []
        for index, turn in sorted(turns.items()):
            original = (f'<div class="cell original"><h4>{ORIGINAL}</h4><div class="text">'
                        f'{html.escape(turn.original)}</div></div>' if turn.original is not None else
                        f'<div class="cell original"><h4>{ORIGINAL}</h4><div class="text missing">'
                        f'(no reference answer)</div></div>')
            cells = "".join(_cell(turn.answers[label], turn.original) for label in data.labels
                            if label in turn.answers)
            rows.append(f'<div class="turn" data-turn="{index}"><div class="user"><b>turn {index + 1}, user:</b> '
                        f'{html.escape(turn.user)}</div><div class="grid">{original}{cells}</div></div>')
        blocks.append(f'<section class="dialogue" data-dataset="{html.escape(dataset)}" '
                      f'data-dialogue="{html.escape(dialogue_id)}"><h2>{html.escape(dataset)} · '
                      f'{html.escape(dialogue_id)}</h2>{"".join(rows)}</section>')
    methods = "".join(f'<label><input type="checkbox" class="method" value="{html.escape(lb)}" checked> '
                      f'{html.escape(lb)}</label>' for lb in data.labels)
    datasets = "".join(f'<option value="{html.escape(d)}">{html.escape(d)}</option>' for d in data.datasets)
    n_turns = sum(len(t) for t in data.dialogues.values())
    return PAGE.format(
        title=html.escape(f"somabench view: {', '.join(data.sources)}"),
        sources=html.escape(", ".join(data.sources)), n_dialogues=len(data.dialogues), n_turns=n_turns,
        methods=methods, datasets=datasets, body="".join(blocks),
        labels=html.escape(json.dumps(data.labels)))


def write_view(paths: list[str | Path], out: str | Path | None = None) -> Path:
    """Collect, render and write the page; returns its path (default: ``<first path>/view.html``)."""
    data = collect(paths)
    target = Path(out) if out else Path(paths[0]) / DEFAULT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(data), encoding="utf-8")
    return target


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #f6f6f8; }}
header {{ position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ddd; padding: 8px 16px; z-index: 1; }}
header h1 {{ font-size: 16px; margin: 0 0 4px; }}
.filters label {{ margin-right: 12px; white-space: nowrap; }}
main {{ padding: 8px 16px; }}
.dialogue {{ background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: 12px 0; padding: 8px 12px; }}
.dialogue h2 {{ font-size: 15px; margin: 4px 0; }}
.turn {{ border-top: 1px solid #eee; padding: 6px 0; }}
.user {{ background: #eef3ff; border-radius: 4px; padding: 4px 8px; margin-bottom: 6px; white-space: pre-wrap; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 8px; }}
.cell {{ border: 1px solid #e3e3e3; border-radius: 4px; padding: 4px 8px; }}
.cell.original {{ background: #fafaf5; }}
.cell h4 {{ margin: 0 0 2px; font-size: 13px; }}
.facts {{ font-size: 12px; color: #555; margin-bottom: 4px; }}
.text {{ white-space: pre-wrap; }}
.missing {{ color: #999; font-style: italic; }}
.who {{ font-weight: bold; padding: 0 4px; border-radius: 3px; background: #ddd; }}
.who-F {{ background: #ffe0b3; }} .who-G {{ background: #c8f0c8; }}
.flag {{ color: #b00; font-weight: bold; }}
ins {{ background: #c8f0c8; text-decoration: none; }}
del {{ background: #ffd6d6; color: #900; }}
.judges {{ font-size: 12px; margin-top: 4px; border-top: 1px dashed #ddd; }}
.judge pre {{ white-space: pre-wrap; margin: 2px 0; }}
.hidden {{ display: none !important; }}
</style></head><body>
<header><h1>somabench view</h1>
<div>Source: {sources} — {n_dialogues} dialogue(s), {n_turns} turn(s); <span id="shown"></span>.
<ins>green</ins>: words the Original lacks, <del>red</del>: the Original's words the answer lacks.</div>
<div class="filters">Methods: {methods}
<label>Dataset: <select id="dataset"><option value="">all</option>{datasets}</select></label>
<label><input type="checkbox" id="post"> post-switch only</label>
<label><input type="checkbox" id="disagree"> disagrees with the Original</label></div>
</header>
<main id="dialogues" data-labels="{labels}">{body}</main>
<script>
function apply() {{
  const methods = new Set([...document.querySelectorAll("input.method:checked")].map(e => e.value));
  const dataset = document.getElementById("dataset").value;
  const post = document.getElementById("post").checked;
  const disagree = document.getElementById("disagree").checked;
  let shown = 0;
  for (const d of document.querySelectorAll(".dialogue")) {{
    if (dataset !== "" && d.dataset.dataset !== dataset) {{ d.classList.add("hidden"); continue; }}
    let any = false;
    for (const t of d.querySelectorAll(".turn")) {{
      let keep = false;
      for (const c of t.querySelectorAll(".cell[data-method]")) {{
        const ok = methods.has(c.dataset.method) && (!post || c.dataset.post === "1")
          && (!disagree || c.dataset.disagrees === "1");
        c.classList.toggle("hidden", !ok);
        keep = keep || ok;
      }}
      t.classList.toggle("hidden", !keep);
      if (keep) shown += 1;
      any = any || keep;
    }}
    d.classList.toggle("hidden", !any);
  }}
  document.getElementById("shown").textContent = shown + " turn(s) shown";
}}
// initial filters from the address: view.html#methods=a,b&dataset=x&post=1&disagree=1
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.has("methods")) {{
  const keep = new Set(hash.get("methods").split(","));
  for (const e of document.querySelectorAll("input.method")) e.checked = keep.has(e.value);
}}
if (hash.has("dataset")) document.getElementById("dataset").value = hash.get("dataset");
document.getElementById("post").checked = hash.get("post") === "1";
document.getElementById("disagree").checked = hash.get("disagree") === "1";
for (const e of document.querySelectorAll("input, select")) e.addEventListener("change", apply);
apply();
</script></body></html>
"""


__all__ = ["collect", "disagrees", "render", "word_diff", "write_view"]
