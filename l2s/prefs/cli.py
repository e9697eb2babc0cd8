"""``l2s pairs``: Ada-R1 preference data from a long and a short model's evaluation runs, and
``l2s pairs s1k``: Wu et al.'s DPO baseline pairs from the s1K calibration files."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from l2s.config import add_flags
    from l2s.prefs.s1k import PROMPTS

    p = sub.add_parser("pairs", help="build Ada-R1 preference pairs (or SFT rows) from two sampled runs",
                       description="Bi-level preference pairs (Ada-R1) from the graded samples of a long and "
                                   "a short model: l2s pairs --long RUN --short RUN --out DIR. Options override "
                                   "--config, which overrides the defaults. `l2s pairs s1k` builds Wu et al.'s "
                                   "DPO baseline pairs from the s1K calibration files instead.")
    add_flags(p, "l2s.prefs.config:PairsConfig", ("variant", "epsilon", "m1", "m2", "instance_rejected",
                                                  "baseline_source", "baseline_pairs", "seed"), help={
        "epsilon": "long preferred iff acc_L - acc_S > epsilon (default 1/(2K))",
        "m1": "group-level pairs per problem (default 4)", "m2": "instance-level pairs per problem (default 2)",
        "instance_rejected": "'any' = paper (default), 'correct' = the authors' code",
        "baseline_source": "shortest_vs_longest from both models' samples (pooled, default) or the long model's"})
    p.add_argument("--long", type=Path, help="the long model's run directory (or generations.jsonl); required")
    p.add_argument("--short", type=Path, help="the short model's run directory (or generations.jsonl); required")
    p.add_argument("--out", type=Path, help="output directory; required")
    p.add_argument("--config", type=Path, help="JSON/YAML file of PairsConfig options")
    p.add_argument("--problems", type=Path,
                   help="JSONL with id and problem (or messages): the pairs' prompts, instead of the rows' chats")
    p.add_argument("--tokenizer", help="the model DPO will train: check that its chat template renders the pairs "
                                       "as sampled (what it breaks goes to summary.json warnings)")
    p.add_argument("--keep-both-zero", dest="drop_both_zero", action="store_const", const=False,
                   help="keep problems where both models score 0")
    p.add_argument("--intersect", dest="require_same_problems", action="store_const", const=False,
                   help="use the problems both runs cover instead of failing when they differ")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_pairs)

    sources = p.add_subparsers(dest="pairs_source", metavar="SOURCE")
    s = sources.add_parser(
        "s1k", help="Wu et al.'s DPO baseline: s1K short solution chosen over the long one",
        description="Pairs of Wu et al. (2025)'s DPO baseline (Table 1): for each row of the s1K calibration "
                    "files (`l2s calibration s1k`, --n 1000 for all of s1K), the short solution chosen and the "
                    "long one rejected, as chats for TOKENIZER's template. Train with "
                    "`l2s dpo --preset wu-dpo --model MODEL --pairs OUT --out CKPT`. Example: "
                    "l2s pairs s1k --calibration-dir calibration --tokenizer MODEL --out runs/pairs-wu-dpo")
    s.add_argument("--calibration-dir", required=True, type=Path, help="holds s1k-short.jsonl, s1k-long.jsonl")
    s.add_argument("--tokenizer", required=True, help="the model to train (checkpoint directory or hub id)")
    s.add_argument("--out", required=True, type=Path, help="output directory")
    s.add_argument("--prompt", choices=PROMPTS, default="qwen25-math-cot",
                   help="qwen25-math-cot: system prompt + question (default); chat: the question alone")
    s.add_argument("--max-length", type=int, help="DPO's max length, for the truncation count (default 4096)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=run_s1k_pairs)


def run_pairs(args) -> int:
    from l2s.cli import UserError
    from l2s.config import options_from_args, parse, where_of
    from l2s.prefs.build import write_pairs
    from l2s.prefs.config import PairsConfig

    for flag in ("long", "short", "out"):
        if getattr(args, flag) is None:
            raise UserError(f"--{flag} is required (or use `l2s pairs s1k ...`)")
    config = parse(PairsConfig, options_from_args(PairsConfig, args), where_of(args))
    out = write_pairs(args.out, args.long, args.short, config, problems_file=args.problems,
                      overwrite=args.overwrite, tokenizer=args.tokenizer)
    print(out)
    return 0


def run_s1k_pairs(args) -> int:
    from l2s.prefs.s1k import write_s1k_pairs

    print(write_s1k_pairs(args.out, args.calibration_dir, args.tokenizer, prompt=args.prompt,
                          max_length=args.max_length, overwrite=args.overwrite))
    return 0
