"""Is a response's final answer equal to the gold answer? math-verify, with the fixes the data needs.

The final answer is the last ``\\boxed{}`` of the answer part (after ``</think>`` when present);
without one, math-verify's own extraction ("the final answer is ...", last expression) is used —
except for a response that hit ``max_new_tokens`` (``truncated``): with the default policy
``"wrong"`` it has no final answer and is wrong, rather than credited with a number picked out of
a cut-off chain of thought. Equivalence is math-verify's ``verify`` (sympy), after these fixes:

- e-notation (Minerva golds such as ``4.5e33``) is rewritten as ``4.5\\times10^{33}`` on both sides;
- multiple-choice golds (a single letter A-E, bare or as ``(C)``/``\\text{(C)}``) compare letters;
- a number followed by unit words (``5 meters``, ``1.6 \\text{ cm}``) keeps the number; only words of
  two or more letters or ``\\text{}``/``\\mathrm{}`` count as units, so ``a+b`` never becomes ``+b``
  (the Qwen2.5-Math toolkit's fault), and no ×100 rescaling is tried, so 18 never equals 1800;
- identical answer text (up to spacing and ``\\left``/``\\right``) is correct, checked before sympy
  (fast) and again after it (text answers sympy cannot compare).

Grading runs in a process pool; each answer has a timeout (SIGALRM in the worker) and a timeout
counts as wrong, with status ``timeout``. The workers die with the process that started them (on
Linux ``PR_SET_PDEATHSIG``, as the data-parallel workers: a SIGKILLed ``l2s eval`` leaves none behind),
take SIGTERM's default action, and are killed rather than waited for when grading is interrupted.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import re
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

from l2s.data import last_boxed, strip_dollars
from l2s.eval.measures import split_thinking

TRUNCATION_POLICIES = ("wrong", "grade")
# Statuses: how the answer was judged.
STATUSES = ("exact", "verify", "string", "mc", "fallback", "no_answer", "truncated", "timeout", "error")


@dataclass(frozen=True)
class GradeConfig:
    """How answers are graded. ``truncation_policy``: ``"wrong"`` — a truncated response without a
    ``\\boxed{}`` answer is wrong (status ``truncated``); ``"grade"`` — extract an answer anyway."""

    timeout_s: float = 10.0
    workers: int | None = None  # processes; None = min(cpu_count, 8); 0 = grade in this process
    truncation_policy: str = "wrong"
    chunk_size: int = 32
    min_pool_items: int = 64  # fewer items are graded in this process
    # Identical answer text is correct without sympy (the Qwen2.5-Math toolkit's first check too):
    # parsing LaTeX with math-verify's ANTLR grammar costs ~10-20 ms an answer on one CPU core.
    string_fast_path: bool = True

    def __post_init__(self):
        if self.timeout_s <= 0:
            raise ValueError(f"grading timeout_s must be > 0, got {self.timeout_s}")
        if self.truncation_policy not in TRUNCATION_POLICIES:
            raise ValueError(f"truncation_policy must be one of {TRUNCATION_POLICIES}, "
                             f"got {self.truncation_policy!r}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"grading workers must be >= 0, got {self.workers}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")


@dataclass(frozen=True)
class Grade:
    pred: str | None
    correct: bool
    status: str

    def to_dict(self) -> dict:
        return asdict(self)


class _Timeout(BaseException):
    """Raised by SIGALRM; a BaseException so that math-verify's ``except Exception`` cannot swallow it."""


# ---------------------------------------------------------------- normalization of answer strings

_E_NOTATION = re.compile(r"(?<![\w.\\])(\d+(?:\.\d*)?|\.\d+)\s*[eE]\s*([+-]?\d+)(?![\w.])")
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")
_NUMBER = re.compile(r"^\s*(?:\\\$|\$)?\s*[-+]?\s*(?:\d[\d,]*(?:\.\d*)?|\.\d+)"
                     r"(?:\s*\\times\s*10\s*\^\s*(?:\{\s*[-+]?\d+\s*\}|[-+]?\d))?")
_UNIT_WORDS = re.compile(r"^[A-Za-z]{2,}[A-Za-z\s.\-/^{}\d()]*$")
_UNIT_ANY = re.compile(r"^[A-Za-z][A-Za-z\s.\-/^{}\d()]*$")
_MC = re.compile(r"^\(?([A-E])\)?$")
_MC_PRED = re.compile(r"^\(?([A-E])(?:\)|[.:]|\)?\s*$)")


def e_notation_to_latex(s: str) -> str:
    """``4.5e33`` -> ``4.5\\times10^{33}`` (standalone numbers only; ``2e`` or ``x3e5`` are kept)."""
    return _E_NOTATION.sub(lambda m: f"{m.group(1)}\\times10^{{{m.group(2)}}}", s)


def strip_units(s: str) -> str:
    """``5 meters`` / ``1.6 \\mathrm{~cm}`` -> the number; anything not ``<number> <units>`` is kept."""
    m = _NUMBER.match(s)
    if not m:
        return s
    rest = s[m.end():]
    unwrapped, wrapped = _TEXT_WRAP.subn(r"\1", rest)
    unwrapped = unwrapped.replace("~", " ").replace("\\,", " ").replace("\\ ", " ").strip()
    if not unwrapped:
        return s
    pattern = _UNIT_ANY if wrapped else _UNIT_WORDS
    return s[:m.end()].strip() if pattern.match(unwrapped) else s


def normalize_answer(s: str) -> str:
    s = strip_dollars(s.strip())
    s = e_notation_to_latex(s)
    return strip_units(s)


def mc_letter(s: str, loose: bool = False) -> str | None:
    """The multiple-choice letter of ``(C)``, ``\\text{(C)}``, ``C`` (``loose``: also ``(C) 12``)."""
    s = _TEXT_WRAP.sub(r"\1", strip_dollars(s)).strip()
    m = (_MC_PRED if loose else _MC).match(s)
    return m.group(1) if m else None


def _squash(s: str) -> str:
    return re.sub(r"\s+|\\[,;!: ]|\\left|\\right", "", s)


# ---------------------------------------------------------------- math-verify

@functools.lru_cache(maxsize=8192)
def _parse_boxed(content: str):
    from math_verify import parse

    return parse(f"\\boxed{{{content}}}", parsing_timeout=None)


@functools.lru_cache(maxsize=1024)
def _parse_text(text: str):
    from math_verify import parse

    return parse(text, parsing_timeout=None)


def _verify(gold, pred) -> bool:
    from math_verify import verify

    return bool(verify(gold, pred, timeout_seconds=None))


def equivalent(gold: str, pred: str, string_fast_path: bool = True) -> tuple[bool, str]:
    """(correct, status) for two answer strings (contents of ``\\boxed{}``)."""
    g, p = normalize_answer(gold), normalize_answer(pred)
    letter = mc_letter(g)
    if letter is not None:
        return mc_letter(p, loose=True) == letter, "mc"
    if string_fast_path and _squash(g) == _squash(p):
        return True, "exact"
    if _verify(_parse_boxed(g), _parse_boxed(p)):
        return True, "verify"
    if _squash(g) == _squash(p):
        return True, "string"
    return False, "verify"


def extract_pred(response: str) -> str | None:
    """The last ``\\boxed{}`` of the answer part (after ``</think>``), else of the whole response."""
    _, answer = split_thinking(response)
    pred = last_boxed(answer)
    return pred if pred is not None else last_boxed(response)


def grade(response: str, gold: str, truncated: bool = False, truncation_policy: str = "wrong",
          string_fast_path: bool = True) -> Grade:
    """Grade one response (no timeout: see :func:`grade_with_timeout`)."""
    pred = extract_pred(response)
    if pred is not None:
        ok, status = equivalent(gold, pred, string_fast_path)
        return Grade(pred, ok, status)
    if truncated and truncation_policy == "wrong":
        return Grade(None, False, "truncated")
    _, answer = split_thinking(response)
    parsed = _parse_text(answer)
    if not parsed:
        return Grade(None, False, "no_answer")
    pred = str(parsed[-1])
    letter = mc_letter(normalize_answer(gold))
    if letter is not None:
        return Grade(pred, mc_letter(pred, loose=True) == letter, "mc")
    return Grade(pred, _verify(_parse_boxed(normalize_answer(gold)), parsed), "fallback")


def _alarm(signum, frame):
    raise _Timeout()


def grade_with_timeout(response: str, gold: str, truncated: bool = False,
                       truncation_policy: str = "wrong", timeout_s: float | None = 10.0,
                       string_fast_path: bool = True) -> Grade:
    """:func:`grade` under a SIGALRM timeout (main thread only; elsewhere without a timeout)."""
    use_alarm = timeout_s is not None and threading.current_thread() is threading.main_thread()
    if use_alarm:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return grade(response, gold, truncated, truncation_policy, string_fast_path)
    except _Timeout:
        return Grade(extract_pred(response), False, "timeout")
    except Exception as e:  # a grader crash on one odd answer must not stop a run: counted as wrong
        logging.getLogger(__name__).debug("grading error: %r", e)
        return Grade(extract_pred(response), False, "error")
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def _init_worker():
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _init_pool_worker(parent_pid: int):
    """A pool worker: dies with its parent (SIGTERM from the kernel), and SIGTERM kills it at once
    (a forked worker inherits the CLI's handler, :func:`l2s.cli.sigterm_raises`)."""
    from l2s.eval.backends.parallel import die_with_parent

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    die_with_parent(parent_pid)
    _init_worker()


def _grade_chunk(chunk: list[tuple], policy: str, timeout_s: float, fast: bool) -> list[tuple]:
    out = []
    for response, gold, truncated in chunk:
        g = grade_with_timeout(response, gold, truncated, policy, timeout_s, fast)
        out.append((g.pred, g.correct, g.status))
    return out


class Grader:
    """Grades lists of (response, gold, truncated) in a lazily started process pool. Use as a
    context manager (or call :meth:`close`) so the pool's processes end with it."""

    def __init__(self, config: GradeConfig | None = None):
        self.config = config or GradeConfig()
        self._pool: ProcessPoolExecutor | None = None
        _init_worker()

    def start(self) -> ProcessPoolExecutor:
        """Start the worker processes now. Call it before loading a model onto a GPU: the workers are
        forked (no re-import of the caller's script, which spawn would need guarded by ``if __name__
        == "__main__"``), and forking is safe only before CUDA and the inference engine's threads exist."""
        if self._pool is None:
            import math_verify  # noqa: F401  (imported once here, inherited by the forked workers)

            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            self._pool = ProcessPoolExecutor(max(1, self._workers()), initializer=_init_pool_worker,
                                             initargs=(os.getpid(),), mp_context=multiprocessing.get_context(method))
            self._pool.submit(_init_worker).result()  # with fork, all workers start on the first task
        return self._pool

    def _workers(self) -> int:
        w = self.config.workers
        return min(os.cpu_count() or 1, 8) if w is None else w

    def grade(self, items: list[tuple[str, str, bool]], progress: bool = False,
              desc: str = "grading") -> list[Grade]:
        cfg = self.config
        chunks = [items[i:i + cfg.chunk_size] for i in range(0, len(items), cfg.chunk_size)]
        fn = functools.partial(_grade_chunk, policy=cfg.truncation_policy, timeout_s=cfg.timeout_s,
                               fast=cfg.string_fast_path)
        bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="ans")
        results: list[Grade] = []
        if self._workers() == 0 or len(items) < cfg.min_pool_items:
            mapped = map(fn, chunks)
        else:
            mapped = self.start().map(fn, chunks)
        for chunk_out in mapped:
            results += [Grade(*r) for r in chunk_out]
            bar.update(len(chunk_out))
        bar.close()
        return results

    def close(self, kill: bool = False) -> None:
        """Stop the pool: wait for its workers, or (``kill``: an error or an interrupt) kill them at once."""
        if self._pool is not None:
            if kill:
                for p in self.processes():
                    p.kill()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def processes(self) -> list:
        """The worker processes (for tests and diagnostics); [] before :meth:`start`."""
        return list((getattr(self._pool, "_processes", None) or {}).values()) if self._pool else []

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(kill=exc_type is not None)


def grade_many(items: list[tuple[str, str, bool]], config: GradeConfig | None = None,
               progress: bool = True) -> list[Grade]:
    """Grade (response, gold, truncated) triples in a process pool, in order."""
    with Grader(config) as g:
        return g.grade(items, progress=progress)
