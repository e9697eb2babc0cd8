"""``l2s toy``: write the toy task's splits, build the toy model family."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_N = {"train": 4000, "dev": 100, "test": 100}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("toy", help="the CPU toy world: task splits and tiny Qwen2 models",
                       description="The CPU toy world: a shell-game task and quick/slow/short tiny Qwen2 models.")
    toy_sub = p.add_subparsers(dest="toy_command", metavar="TOY_COMMAND", required=True)

    d = toy_sub.add_parser("data", help="write the splits as DIR/<split>.jsonl")
    d.add_argument("--out", required=True, type=Path, help="output directory")
    d.add_argument("--seed", type=int, default=0)
    for split, n in DEFAULT_N.items():
        d.add_argument(f"--n-{split}", type=int, default=n, help=f"problems per level in {split} (default {n})")
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=run_data)

    from l2s.toy.family import DEFAULT_SIZE, SIZES

    b = toy_sub.add_parser("build", help="train (or reuse from the cache) quick/slow/short models of one size",
                           description="Writes DIR/quick, DIR/slow, DIR/short (HF checkpoints); trained once, "
                                       "then reused from the cache (L2S_CACHE, default .cache/ of the checkout).")
    b.add_argument("--size", default=DEFAULT_SIZE, choices=sorted(SIZES), help=f"default {DEFAULT_SIZE}")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--cache-dir", type=Path, default=None)
    b.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for tiny models)")
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=run_build)


def run_data(args) -> int:
    from l2s.toy.data import write_splits

    n = {s: getattr(args, f"n_{s}") for s in DEFAULT_N}
    paths = write_splits(args.out, n, seed=args.seed, overwrite=args.overwrite)
    for p in paths:
        print(p)
    return 0


def run_build(args) -> int:
    from l2s.toy.build import export_family

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    for role, path in export_family(args.size, args.out, cache=args.cache_dir, overwrite=args.overwrite,
                                    threads=args.threads).items():
        print(f"{role}\t{path}")
    return 0
