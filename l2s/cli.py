"""The ``l2s`` command line: one entry point, one subcommand per job.

Each subcommand lives in its own module that exposes ``register(subparsers)`` — which adds an
``argparse`` sub-parser and sets ``func`` — and keeps heavy imports (torch, transformers) inside the
function it runs, so that ``l2s --help`` stays fast. Add a subcommand by adding its module here.

Every failure exits with status 2 and one message ``l2s <cmd>: error: ...`` that names the culprit
and what to do (:func:`describe`); ``--debug`` adds the traceback. SIGTERM is raised in the main
process as :class:`Terminated` (a ``KeyboardInterrupt``), so that cleanup runs (temporary outputs are
removed, worker processes stopped) before the process exits with status 143.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Iterator

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
    "l2s.sweep",
    "l2s.figures.cli",
    "l2s.study",
]
DEBUG_HINT = "rerun with --debug for the traceback"
# Errors whose message already names the culprit (l2s raises them with the file, field or option).
MESSAGE_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)
NETWORK_MODULES = ("httpx", "httpcore", "requests", "urllib3", "aiohttp")
# A hidden temporary sibling (l2s.io) is named in messages as the output it becomes.
TEMP_NAME = re.compile(r"(^|[\s'\"(/])\.([^/\s'\"]+?)\.[A-Za-z0-9-]+\.\d+\.[0-9a-f]{8}\.tmp\b")


class UserError(Exception):
    """A problem with the user's input: printed as one clear line, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread of the CLI process so that ``finally`` clauses run."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2s",
        description="Long-to-short reasoning study: toy world, merging, evaluation, Ada-R1, figures.",
    )
    parser.add_argument("--version", action="version", version=f"l2s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    from l2s.config import CommandParser  # subcommands' dataclass flags are made when that command runs

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _chain(e: BaseException) -> Iterator[BaseException]:
    """``e`` and the exceptions it was raised from (or during), outermost first."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _text(e: BaseException) -> str:
    """An exception's message without any traceback it quotes (a worker's report): the lines before
    it and the traceback's last line."""
    lines = [line.rstrip() for line in str(e).splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    cut = next((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")), None)
    if cut is None:
        return "\n".join(lines)
    return " ".join(lines[:cut] + [lines[-1].strip()])


def _os_hint(err: OSError) -> tuple[str, str] | None:
    """(what failed, what to do) for a disk error, or None for another OSError."""
    if err.errno == errno.EROFS:
        return "cannot write", "the file system is read-only: choose an output path on a writable disk"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "cannot write", "the disk is full: free some space or choose an output path on another disk"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "cannot access", "permission denied: check the permissions of that path or choose another one"
    return None


def _is_network(err: BaseException) -> bool:
    return (isinstance(err, ConnectionError) or type(err).__module__.split(".")[0] in NETWORK_MODULES
            or type(err).__name__ in ("OfflineModeIsEnabled", "LocalEntryNotFoundError"))


def describe(e: BaseException) -> str:
    """The one message the CLI prints for ``e``: what failed, on which file, field or option, and what to do."""
    return TEMP_NAME.sub(r"\1\2", _describe(e))


def _describe(e: BaseException) -> str:
    chain = list(_chain(e))
    for err in chain:
        if isinstance(err, OSError) and (hint := _os_hint(err)):
            verb, todo = hint
            return f"{verb} {err.filename}: {todo}" if err.filename is not None else f"{_text(e)}: {todo}"
    for err in chain:
        if type(err).__name__ == "SafetensorError":
            return (f"{_text(e)}: a corrupt or truncated safetensors file; re-download or rebuild the checkpoint "
                    "(l2s merge, l2s toy build)")
    for err in chain:
        if _is_network(err) and "hub" not in _text(e).lower():
            return (f"{_text(e)}: the Hugging Face hub cannot be reached (offline?); use local inputs: "
                    "--data-dir DIR with <dataset>/<split>.jsonl for benchmarks, a local directory for models")
    if isinstance(e, (UserError, *MESSAGE_ERRORS)):
        return _text(e)
    if isinstance(e, OSError):
        return f"{e.filename}: {e.strerror}" if e.filename is not None else _text(e)
    if isinstance(e, KeyError):
        return f"an input lacks the field {e.args[0]!r} (KeyError); check the input files, or {DEBUG_HINT}"
    if isinstance(e, RuntimeError):  # l2s's own failures (a worker died) and torch's (out of memory)
        return f"{_text(e)}; {DEBUG_HINT}"
    if isinstance(e, (TypeError, AttributeError)):
        return f"an input has the wrong shape or type ({type(e).__name__}: {_text(e)}); check the input files " \
               f"and options, or {DEBUG_HINT}"
    return f"unexpected {type(e).__name__}: {_text(e).splitlines()[0]}; {DEBUG_HINT}"


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in this process's main thread (a second one kills
    at once). A process forked meanwhile that inherited the handler dies of SIGTERM as by default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()

    def handler(signum, frame):
        signal.signal(signum, signal.SIG_DFL)
        if os.getpid() != pid:
            os.kill(os.getpid(), signum)
            return
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


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
        with sigterm_raises():
            return int(args.func(args) or 0)
    except Terminated:
        print(f"l2s {args.command}: terminated (SIGTERM); rerun the same command to resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"l2s {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (every error becomes one message, exit status 2)
        if args.debug:
            traceback.print_exc()
        print(f"l2s {args.command}: error: {describe(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
