"""``l2s pairs``: Ada-R1 preference data from a long and a short model's evaluation runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from l2s.prefs.config import BASELINE_SOURCES, INSTANCE_REJECTED, VARIANTS

    p = sub.add_parser("pairs", help="build Ada-R1 preference pairs (or SFT rows) from two sampled runs",
                       description="Bi-level preference pairs (Ada-R1) from the graded samples of a long and "
                                   "a short model. Options override --config, which overrides the defaults.")
    p.add_argument("--long", required=True, type=Path, help="the long model's run directory (or generations.jsonl)")
    p.add_argument("--short", required=True, type=Path, help="the short model's run directory (or generations.jsonl)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--config", type=Path, help="JSON/YAML file of PairsConfig options")
    p.add_argument("--problems", type=Path,
                   help="JSONL with id and problem (or messages), for prompts that are not ChatML")
    p.add_argument("--variant", choices=VARIANTS)
    p.add_argument("--epsilon", type=float, help="long preferred iff acc_L - acc_S > epsilon (default 1/(2K))")
    p.add_argument("--m1", type=int, help="group-level pairs per problem (default 4)")
    p.add_argument("--m2", type=int, help="instance-level pairs per problem (default 2)")
    p.add_argument("--instance-rejected", choices=INSTANCE_REJECTED,
                   help="'any' = paper (default), 'correct' = the authors' code")
    p.add_argument("--baseline-source", choices=BASELINE_SOURCES)
    p.add_argument("--baseline-pairs", type=int)
    p.add_argument("--keep-both-zero", dest="drop_both_zero", action="store_const", const=False,
                   help="keep problems where both models score 0")
    p.add_argument("--intersect", dest="require_same_problems", action="store_const", const=False,
                   help="use the problems both runs cover instead of failing when they differ")
    p.add_argument("--seed", type=int)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_pairs)


def run_pairs(args) -> int:
    from l2s.prefs.build import write_pairs
    from l2s.prefs.config import PairsConfig, config_from_mapping, options_from_args

    options = options_from_args(PairsConfig, args)
    config = config_from_mapping(PairsConfig, options, str(args.config or "options"))
    out = write_pairs(args.out, args.long, args.short, config, problems_file=args.problems,
                      overwrite=args.overwrite)
    print(out)
    return 0
