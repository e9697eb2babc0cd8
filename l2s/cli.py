"""The ``l2s`` command line: one entry point, one subcommand per job.

Each subcommand lives in its own module that exposes ``register(subparsers)`` — which adds an
``argparse`` sub-parser and sets ``func`` — and keeps heavy imports (torch, transformers) inside the
function it runs, so that ``l2s --help`` stays fast. Add a subcommand by adding its module here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from l2s import __version__

# Subcommand modules, in the order ``l2s --help`` lists them.
SUBCOMMAND_MODULES = [
    "l2s.toy.cli",
    "l2s.standins",
    "l2s.eval.cli",
    "l2s.prefs.sample",
    "l2s.prefs.cli",
    "l2s.mix",
    "l2s.short_cot",
    "l2s.sft",
    "l2s.dpo.cli",
    "l2s.merge.s1k",
    "l2s.merge.cli",
    "l2s.figures.cli",
    "l2s.study",
]


class UserError(Exception):
    """A problem with the user's input: printed as one clear line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2s",
        description="Long-to-short reasoning study: toy world, merging, evaluation, Ada-R1, figures.",
    )
    parser.add_argument("--version", action="version", version=f"l2s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"l2s {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"l2s {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
