"""Deterministic matplotlib output: fixed rcParams, no timestamps, same data -> same bytes.

PNG and PDF are rendered into memory and written atomically; the PDF's CreationDate is dropped and
``svg.hashsalt`` fixed, so two calls on the same runs give byte-identical files.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from l2s.io import atomic_write_bytes
from l2s.runs import method_labels

RC = {
    "svg.hashsalt": "l2s",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.axisbelow": True,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "pdf.fonttype": 42,
    "path.simplify": True,
    "hatch.linewidth": 0.8,
}
PDF_METADATA = {"CreationDate": None, "Creator": "l2s figures", "Producer": None}
PNG_METADATA = {"Software": "l2s figures"}

_FIXED_COLORS = {"quick": "#a6a6a6", "slow": "#3c3c3c", "short": "#e7298a"}
_HATCHES = ("", "//", "..", "xx", "\\\\", "oo")


def style():
    """Context manager: the fixed rcParams of every l2s figure."""
    return matplotlib.rc_context(RC)


def method_color(key: str) -> str:
    """One colour per method key, the same in every figure (tab20, in the papers' method order)."""
    if key in _FIXED_COLORS:
        return _FIXED_COLORS[key]
    known = [k for k in method_labels() if k not in _FIXED_COLORS]
    cmap = matplotlib.colormaps["tab20"]
    i = known.index(key) if key in known else len(known) + sum(map(ord, key))
    return matplotlib.colors.to_hex(cmap((2 * i + i // 10) % 20))


def series_styles(frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """label -> (colour, hatch): the method's colour; a hatch tells apart labels sharing a method."""
    out, seen = {}, {}
    for label, method in frame[["label", "method"]].drop_duplicates().itertuples(index=False):
        if label in out:
            continue
        n = seen.get(method, 0)
        seen[method] = n + 1
        out[label] = (method_color(method), _HATCHES[n % len(_HATCHES)])
    return out


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n", float_format="%.10g").encode("utf-8")


def save(fig: Figure, data: pd.DataFrame, out_dir: Path, name: str) -> list[Path]:
    """Write ``name``.csv, .png and .pdf into ``out_dir`` (each atomically); return their paths."""
    paths = [atomic_write_bytes(out_dir / f"{name}.csv", csv_bytes(data))]
    with style():
        fig.draw_without_rendering()  # lay out once; both formats reuse the positions
        fig.set_layout_engine("none")
        for fmt, metadata in (("png", PNG_METADATA), ("pdf", PDF_METADATA)):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, metadata=metadata)
            paths.append(atomic_write_bytes(out_dir / f"{name}.{fmt}", buf.getvalue()))
    return paths
