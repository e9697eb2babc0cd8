"""Reproduction report: a study's new runs against the committed record, metric by metric.

Every ``metrics.json`` under the new runs directory (Ada-R1's evaluation runs included) is matched
with the file at the same relative path under the reference directory. Each numeric leaf (accuracy,
mean tokens, reflective ratio, ... overall and by level) is *equal* or *differs* by a stated absolute
amount; a run on one side only is *new* or *not rerun*. ``generations.jsonl`` files are compared by
digest, since equal metrics can hide different responses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from l2s.io import atomic_write_json, atomic_write_text, read_json
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
    differences: dict[str, list[float | None]] = field(default_factory=dict)  # metric -> [new, reference]
    generations: str = ""  # "identical", "differ", or "" (none on one side)


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
                "new": sum(r.status == "new" for r in self.runs),
                "not_rerun": sum(r.status == "not rerun" for r in self.runs)}


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
        diffs = {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b))
                 if k not in a or k not in b or not math.isclose(a[k], b[k], rel_tol=rel_tol, abs_tol=0.0)}
        gens = [d / run / "generations.jsonl" for d in (new_dir, reference_dir)]
        same_gens = "" if not all(g.is_file() for g in gens) else (
            "identical" if file_sha256(gens[0]) == file_sha256(gens[1]) else "differ")
        finite = [abs(x - y) for x, y in diffs.values() if x is not None and y is not None]
        out.append(RunComparison(run, "differs" if diffs else "equal", len(set(a) | set(b)),
                                 len(set(a) | set(b)) - len(diffs), max(finite, default=0.0), diffs, same_gens))
    return Report(str(new_dir), str(reference_dir), out)


def render(report: Report, top: int = 3) -> str:
    """Markdown: the totals, then one line per run (and its largest differences)."""
    t = report.totals
    lines = [f"# Reproduction: {report.new} against {report.reference}", "",
             f"{t['runs_equal']} of {t['runs_compared']} runs reproduce every metric exactly; "
             f"{t['metrics_equal']} of {t['metrics']} metrics equal; generations identical in "
             f"{t['generations_identical']} runs; {t['new']} new runs, {t['not_rerun']} not rerun.", "",
             "| run | status | metrics equal | max abs diff | generations |", "|---|---|---|---|---|"]
    for r in report.runs:
        lines.append(f"| {r.run} | {r.status} | {r.n_equal}/{r.n_metrics} | {r.max_abs_diff:.4g} | "
                     f"{r.generations or '-'} |")
    differing = [r for r in report.runs if r.status == "differs"]
    if differing:
        lines += ["", "Largest differences (new vs reference):"]
        for r in differing:
            worst = sorted(r.differences.items(), key=lambda kv: -math.inf if None in kv[1]
                           else -abs(kv[1][0] - kv[1][1]))[:top]
            lines.append(f"- {r.run}: " + "; ".join(f"{k} {_num(x)} vs {_num(y)}" for k, (x, y) in worst))
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "absent" if x is None else f"{x:.4g}"


def write_report(report: Report, stem: str | Path) -> str:
    """Write ``<stem>.md`` and ``<stem>.json``; return the markdown."""
    text = render(report)
    stem = Path(stem)
    atomic_write_text(stem.with_suffix(".md"), text)
    atomic_write_json(stem.with_suffix(".json"), {"new": report.new, "reference": report.reference,
                                                  "totals": report.totals, "runs": [asdict(r) for r in report.runs]})
    return text
