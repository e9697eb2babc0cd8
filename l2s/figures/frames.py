"""The runs of a runs/ directory as tidy frames: one row per (run, dataset), and per (run, dataset, level).

Runs are read by :func:`l2s.runs.find_runs` (the run contract: tags in config.json, metrics.json);
a run is a series of the figures when its tags have a size and a role (:attr:`l2s.runs.RunTags.plotted`).
Frames here carry accuracy, reflective ratio and the correction rates in % so that they sit beside the
papers' numbers; the correction columns (:data:`l2s.eval.metrics.CORRECTION_KEYS`) are NaN for runs
whose metrics predate them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from l2s.eval.metrics import CORRECTION_KEYS
from l2s.runs import HOW_TO_RUN, METRIC_KEYS, ROLE_ORDER, find_runs, method_labels, params_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runs:
    """``datasets``: one row per (run, dataset); ``levels``: one row per (run, dataset, level)."""

    datasets: pd.DataFrame
    levels: pd.DataFrame


def series_order(key: str, role: str) -> tuple:
    """Sort key: role order of the study, then the method order of the papers' tables."""
    known = list(method_labels())
    return (ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER),
            known.index(key) if key in known else len(known), key)


COLUMNS = (*METRIC_KEYS, *CORRECTION_KEYS)
_RATES = ("correction_rate", "harmful_check_rate", "unchanged_check_rate")


def _metric_row(values: dict) -> dict:
    """The metrics of one block as frame columns: fractions in %, a correction field a run lacks (or
    None: nothing checked) as NaN."""
    row = {k: values[k] for k in METRIC_KEYS}
    row["accuracy"] = 100.0 * float(row["accuracy"])
    row["reflective_ratio"] = 100.0 * float(row["reflective_ratio"])
    for k in CORRECTION_KEYS:
        v = values.get(k)
        row[k] = float("nan") if v is None else (100.0 * float(v) if k in _RATES else float(v))
    return row


def load_runs(runs_dir: str | Path) -> Runs:
    """Every finished evaluation run below ``runs_dir`` whose tags name a size and a role, named by its
    path relative to ``runs_dir``. Others (sampling runs, re-evaluations) are skipped with a logged
    note; a runs directory without any finished run is an error saying what to run."""
    runs_dir = Path(runs_dir)
    found = find_runs(runs_dir)
    if not found:
        raise ValueError(f"runs directory {runs_dir} holds no finished evaluation run: {HOW_TO_RUN}")
    rows, level_rows = [], []
    for run in found:
        tags = run.tags
        if not tags.plotted:
            log.info("figures: skipping %s (tags %s: no size and role, or a re-evaluation another run plots)",
                     run.path, tags.to_dict())
            continue
        base = {"run": run.path.relative_to(runs_dir).as_posix(), "size": tags.size, "role": tags.role,
                "method": tags.series, "method_label": tags.label, "params": params_text(tags.params),
                "sweep": bool(tags.sweep)}
        for dataset, level, values in run.blocks():
            if level is None:
                rows.append({**base, "dataset": dataset, **_metric_row(values)})
            else:
                level_rows.append({**base, "dataset": dataset, "level": level, **_metric_row(values)})
    columns = ["run", "size", "role", "method", "method_label", "params", "sweep", "dataset", *COLUMNS]
    return Runs(datasets=pd.DataFrame(rows, columns=columns),
                levels=pd.DataFrame(level_rows, columns=[*columns[:8], "level", *COLUMNS]))


def display_labels(df: pd.DataFrame) -> pd.Series:
    """Method label per row, with the run's parameters appended where one size has several runs of
    the same method (e.g. a TIES run per k) so that bars and points stay distinguishable."""
    counts = df.groupby(["size", "method"])["run"].transform("nunique")
    return pd.Series([f"{lab} ({p})" if n > 1 and p else (f"{lab} [{r}]" if n > 1 else lab)
                      for lab, p, r, n in zip(df["method_label"], df["params"], df["run"], counts)],
                     index=df.index)
