"""Reproduction report: a study's new runs against the committed record, metric by metric.

Every ``metrics.json`` under the new runs directory (Ada-R1's evaluation runs included) is matched
with the file at the same relative path under the reference directory. Each numeric leaf (accuracy,
mean tokens, reflective ratio, ... overall and by level) present on both sides is *equal* or *differs*
by a stated absolute amount; a metric on one side only (a field a newer l2s records) is listed as
added or dropped, not as a difference; a run on one side only is *new* or *not rerun*. Responses are
compared too, since equal metrics can hide different responses: ``generations.jsonl`` is
*identical* (same bytes), has the *same responses* (every row's common fields equal, fields added or
dropped), or *k of n responses differ*.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from l2s.io import atomic_write_json, atomic_write_text, read_json, read_jsonl
from l2s.provenance import file_sha256


def _leaves(obj: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items()
                for k, v in _leaves(value, f"{prefix}.{key}" if prefix else key).items()}
    if isinstance(obj, bool) or not isinstance(obj, (int, float)):
        return {}
    return {prefix: float(obj)}


@dataclass
class RunComparison:
    run: str
    status: str  # "equal", "differs", "new", "not rerun"
    n_metrics: int = 0
    n_equal: int = 0
    max_abs_diff: float = 0.0
    differences: dict[str, list[float]] = field(default_factory=dict)  # metric -> [new, reference]
    added: list[str] = field(default_factory=list)    # metrics only the new run has
    dropped: list[str] = field(default_factory=list)  # metrics only the reference has
    generations: str = ""  # "identical", "same responses", "k of n responses differ", "" (none on one side)


@dataclass
class Report:
    new: str
    reference: str
    runs: list[RunComparison]

    @property
    def totals(self) -> dict[str, int]:
        both = [r for r in self.runs if r.status in ("equal", "differs")]
        return {"runs_compared": len(both), "runs_equal": sum(r.status == "equal" for r in both),
                "metrics": sum(r.n_metrics for r in both), "metrics_equal": sum(r.n_equal for r in both),
                "generations_identical": sum(r.generations == "identical" for r in both),
                "generations_same_responses": sum(r.generations in ("identical", "same responses") for r in both),
                "new": sum(r.status == "new" for r in self.runs),
                "not_rerun": sum(r.status == "not rerun" for r in self.runs)}


GENERATIONS = "generations.jsonl"


def _generations(new: Path, ref: Path) -> str:
    if not (new.is_file() and ref.is_file()):
        return ""
    if file_sha256(new) == file_sha256(ref):
        return "identical"
    a, b = read_jsonl(new), read_jsonl(ref)
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} rows"
    changed = sum(any(x[k] != y[k] for k in set(x) & set(y)) for x, y in zip(a, b))
    return "same responses" if not changed else f"{changed} of {len(a)} rows differ"


def _metrics_files(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        return {}
    return {p.parent.relative_to(root).as_posix(): p for p in sorted(root.rglob("metrics.json"))}


def compare_runs(new_dir: str | Path, reference_dir: str | Path, rel_tol: float = 0.0) -> Report:
    """Compare every run with metrics under ``new_dir`` with its namesake under ``reference_dir``;
    values within ``rel_tol`` (relative) count as equal (default: exactly equal)."""
    new_dir, reference_dir = Path(new_dir), Path(reference_dir)
    if not new_dir.is_dir():
        raise FileNotFoundError(f"no runs to compare: {new_dir} does not exist")
    if not reference_dir.is_dir():
        raise FileNotFoundError(f"reference runs directory {reference_dir} does not exist")
    new, ref = _metrics_files(new_dir), _metrics_files(reference_dir)
    out = []
    for run in sorted(set(new) | set(ref)):
        if run not in ref:
            out.append(RunComparison(run, "new"))
            continue
        if run not in new:
            out.append(RunComparison(run, "not rerun"))
            continue
        a, b = _leaves(read_json(new[run])), _leaves(read_json(ref[run]))
        common = sorted(set(a) & set(b))
        diffs = {k: [a[k], b[k]] for k in common if not math.isclose(a[k], b[k], rel_tol=rel_tol, abs_tol=0.0)}
        out.append(RunComparison(run, "differs" if diffs else "equal", len(common), len(common) - len(diffs),
                                 max((abs(x - y) for x, y in diffs.values()), default=0.0), diffs,
                                 sorted(set(a) - set(b)), sorted(set(b) - set(a)),
                                 _generations(new_dir / run / GENERATIONS, reference_dir / run / GENERATIONS)))
    return Report(str(new_dir), str(reference_dir), out)


def render(report: Report, top: int = 3) -> str:
    """Markdown: the totals, then one line per run (and its largest differences)."""
    t = report.totals
    lines = [f"# Reproduction: {report.new} against {report.reference}", "",
             f"{t['runs_equal']} of {t['runs_compared']} runs reproduce every metric exactly; "
             f"{t['metrics_equal']} of {t['metrics']} metrics equal; the same responses in "
             f"{t['generations_same_responses']} runs ({t['generations_identical']} byte-identical); "
             f"{t['new']} new runs, {t['not_rerun']} not rerun.", "",
             "| run | status | metrics equal | max abs diff | fields added / dropped | generations |",
             "|---|---|---|---|---|---|"]
    for r in report.runs:
        fields = f"{len(r.added)} / {len(r.dropped)}" if r.added or r.dropped else "-"
        lines.append(f"| {r.run} | {r.status} | {r.n_equal}/{r.n_metrics} | {r.max_abs_diff:.4g} | {fields} "
                     f"| {r.generations or '-'} |")
    differing = [r for r in report.runs if r.status == "differs"]
    if differing:
        lines += ["", "Largest differences (new vs reference):"]
        for r in differing:
            worst = sorted(r.differences.items(), key=lambda kv: -abs(kv[1][0] - kv[1][1]))[:top]
            lines.append(f"- {r.run}: " + "; ".join(f"{k} {x:.4g} vs {y:.4g}" for k, (x, y) in worst))
    changed = sorted({f for r in report.runs for f in (*r.added, *r.dropped)})
    if changed:
        shown = ", ".join(changed[:8]) + (f", ... ({len(changed)} in all)" if len(changed) > 8 else "")
        lines += ["", f"Metrics on one side only (recorded by one l2s version, not the other): {shown}"]
    return "\n".join(lines) + "\n"


def write_report(report: Report, stem: str | Path) -> str:
    """Write ``<stem>.md`` and ``<stem>.json``; return the markdown."""
    text = render(report)
    stem = Path(stem)
    atomic_write_text(stem.with_suffix(".md"), text)
    atomic_write_json(stem.with_suffix(".json"), {"new": report.new, "reference": report.reference,
                                                  "totals": report.totals, "runs": [asdict(r) for r in report.runs]})
    return text
