"""The study's figures, regenerated from ``runs/`` alone (no model calls).

``make_figures(runs_dir, out_dir)`` reads every run's tags and metrics (:mod:`l2s.runs`), builds each
figure's table (measured beside the papers' reported numbers), and writes ``NAME.png``, ``NAME.pdf``
and ``NAME.csv`` (the data behind it). Same runs -> same bytes. A figure with no measured data is
skipped with a logged note (and its stale files removed) rather than drawn empty.

Figures: ``length_accuracy`` (Wu et al. 2025 Tables 1-4), ``self_correction`` (Table 6),
``difficulty`` (Fig. 2a/2b), ``adar1_by_level`` (Luo et al. 2025 Figs. 4-6), ``pareto`` (α sweep and
all methods).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

FIGURES = ("length_accuracy", "self_correction", "difficulty", "adar1_by_level", "pareto")


def build_tables(runs_dir: str | Path) -> dict:
    """name -> the figure's data frame (empty when the runs have nothing for it)."""
    from l2s.figures import tables
    from l2s.figures.frames import load_runs

    runs = load_runs(runs_dir)
    return {name: getattr(tables, name)(runs) for name in FIGURES}


def make_figures(runs_dir: str | Path, out_dir: str | Path, only: list[str] | None = None) -> dict[str, list[Path]]:
    """Write every figure (or those in ``only``) into ``out_dir``; return name -> written paths."""
    from l2s.figures.plots import draw
    from l2s.figures.style import save
    from l2s.figures.tables import MEASURED

    unknown = sorted(set(only or ()) - set(FIGURES))
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    tables = build_tables(runs_dir)  # bad or missing runs fail here, before out_dir exists
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    for name, table in tables.items():
        if only and name not in only:
            continue
        if table.empty or not (table["source"] == MEASURED).any():
            log.warning("figures: %s skipped: no run in %s has the data it needs", name, runs_dir)
            for ext in ("png", "pdf", "csv"):
                (out_dir / f"{name}.{ext}").unlink(missing_ok=True)
            continue
        written[name] = save(draw(name, table), table, out_dir, name)
        log.info("figures: wrote %s", ", ".join(str(p) for p in written[name]))
    return written
