"""``l2s figures``: regenerate every figure from the saved runs (no model calls)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from l2s.figures import FIGURES

    p = sub.add_parser("figures", help="regenerate the figures (PNG + PDF + CSV) from runs/",
                       description="Regenerate the study's figures from saved runs alone: each as PNG, PDF "
                                   "and the CSV of the data behind it, measured beside the papers' numbers.")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="runs directory (default runs/)")
    p.add_argument("--out", type=Path, default=Path("figures"), help="output directory (default figures/)")
    p.add_argument("--only", action="append", choices=FIGURES, help="draw only this figure (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    from l2s.figures import make_figures

    written = make_figures(args.runs, args.out, only=args.only)
    for name in sorted(written):
        for path in written[name]:
            print(path)
    return 0
