"""The toy reasoning task: a shell game with exact answers and difficulty levels 1-5.

``N_CUPS`` cups, named ``A``-``H``, stand in a row and a ball is under one of them. The dealer makes
``ROUNDS[L]`` swaps (level ``L``: 1, 2, 4, 6 or 8), each of two cups (``CF``), no pair twice. Question:
where is the ball at the end? Problems of harder levels are longer, so a model that tracks only what it
must can answer easy problems briefly and hard ones at length.

Why this task: the *direct* answer composes up to 8 permutations in one forward pass — hopeless for a
tiny transformer at level 5, trivial at level 1 — while each chain-of-thought line is local: the next
move is the one that follows the previous line's move in the problem (an induction-head lookup, which
works at any problem length), and the new position applies it to the previous one. Every cup, move and
position is one token of the byte-level BPE tokenizer (:mod:`l2s.toy.tokenizer`).

Response styles; every one ends ``The answer is \\boxed{C}``:

- ``direct`` (System 1): a glance at the first swap (``start→C CF→F``), then the answer: exact at level 1, a
  one-pass guess of the later swaps above it;
- ``terse`` (a base model's own CoT): the start (``start→C``), one careful line per swap (``<move>→<cup>``),
  then the answer;
- ``long`` (System 2, R1-like): a *hasty* first pass that overlooks a sleight of hand — a swap of two
  neighbouring cups that moves the ball (``CD`` with the ball under ``C``) is read as if the ball stayed —
  and states an interim answer; then, in ``P_CHECK`` of the teacher's solutions, ``Wait , let me
  double-check .`` (or a longer phrase, :data:`DOUBLE_CHECKS`), a careful re-derivation of the swaps
  and the final answer. The check covers ``CHECK_ROUNDS`` = 7 swaps at most: at level 5 it starts from
  the first pass's position after the first swap (restating that line), so a slip in the first swap
  stays — the teacher, like the slow model, is not perfect on the hardest level. The check
  corrects the interim answer whenever the slip lies in the swaps it covers, which happens more often
  on harder levels (more swaps, more chances); otherwise it changes nothing and is overthinking.
  Without the check the solution ends at the interim answer (right or wrong), so sampled long
  solutions vary in length;
- ``short`` (Ada-R1's short-CoT model): careful lines for the first ``SHORT_ROUNDS`` swaps only, then
  the answer: exact up to level 3, a one-pass guess of the rest beyond (short CoT skips steps on hard
  problems).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

N_CUPS = 8
LEVELS = (1, 2, 3, 4, 5)
ROUNDS = {1: 1, 2: 2, 3: 4, 4: 6, 5: 8}
SPLITS = ("train", "dev", "test")
# The dealer: each swap moves the ball with probability P_BALL; a ball-moving swap is a sleight of hand
# (to a neighbouring cup) with probability P_NEIGHBOUR, so a swap is a slip for the hasty first pass with
# probability P_BALL * P_NEIGHBOUR = 6%: at least one in 6% of level-1 and 43% of level-5 problems.
P_BALL = 0.5
P_NEIGHBOUR = 0.12
P_CHECK = 0.8  # share of the System-2 teacher's solutions that double-check after the interim answer
CHECK_ROUNDS = 7  # the check re-derives the last 7 swaps at most: level 5's first one is trusted

CUPS = [chr(ord("A") + i) for i in range(N_CUPS)]
MOVES = [a + b for i, a in enumerate(CUPS) for b in CUPS[i + 1:]]

PROBLEM = "Eight cups stand in a row . The ball is under cup {start} . Moves : {moves} . Where is the ball ?"
COT_HEAD = "Let me track the ball ."
# The teacher's ways to start its check, one per problem (by a hash). Several lengths, so that no fixed
# distance from a check line to the move it needs exists: a tiny model must look the move up by content
# (with one phrase, the toy s model learned a positional shortcut that failed for two-swap problems).
DOUBLE_CHECKS = ("Wait , let me double-check .", "Wait , let me double-check the moves .",
                 "Wait , let me double-check every move again .")
SHORT_HEAD = "Let me be quick ."
SHORT_ROUNDS = 4
ANSWER = "The answer is \\boxed{{{answer}}}"
STYLES = ("direct", "terse", "long", "short")


def swap(ball: str, move: str) -> str:
    a, b = move
    return b if ball == a else a if ball == b else ball


def neighbours(move: str) -> bool:
    return abs(ord(move[0]) - ord(move[1])) == 1


@dataclass(frozen=True)
class Problem:
    start: str
    moves: tuple[str, ...]  # ROUNDS[level] distinct moves such as "CF"
    level: int

    @property
    def key(self) -> str:
        return f"{self.start}|{' '.join(self.moves)}"

    def states(self, hasty: bool = False, start: str | None = None, first: int = 0) -> list[str]:
        """Ball position after each swap from ``moves[first]`` on, starting under ``start`` (default: the
        problem's start); ``hasty``: as the first pass of a ``long`` solution tracks it, overlooking every
        neighbour swap that moves the (tracked) ball."""
        out, ball = [], self.start if start is None else start
        for move in self.moves[first:]:
            if not (hasty and neighbours(move) and ball in move):
                ball = swap(ball, move)
            out.append(ball)
        return out

    def check(self) -> tuple[int, str, list[str]]:
        """The teacher's double-check: it re-derives the last ``CHECK_ROUNDS`` swaps at most, from the
        first pass's position before them. ``(first, start, states)``: the first swap re-derived, the
        position it starts from, the positions after each re-derived swap."""
        first = max(0, len(self.moves) - CHECK_ROUNDS)
        start = self.start if first == 0 else self.states(hasty=True)[first - 1]
        return first, start, self.states(start=start, first=first)

    @property
    def checked_answer(self) -> str:
        """The teacher's final answer after its check: wrong when the first pass slipped before the
        swaps the check covers (level 5 only)."""
        return self.check()[2][-1]

    @property
    def answer(self) -> str:
        return self.states()[-1]

    @property
    def slips(self) -> bool:
        """Whether the hasty first pass ends at a wrong cup (the double-check corrects it unless the slip
        lies before the swaps it covers, :meth:`check`)."""
        return self.states(hasty=True)[-1] != self.answer

    def text(self) -> str:
        return PROBLEM.format(start=self.start, moves=" ".join(self.moves))


def _chain(start: str, moves, states) -> str:
    """``start→C CF→F FH→H``: the start, then one line per swap (every line applies a move to the line before)."""
    return " ".join([f"start→{start}"] + [f"{m}→{s}" for m, s in zip(moves, states)])


def _unit(*parts) -> float:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12], 16) / 16**12


def checks(problem: Problem, seed: int = 0) -> bool:
    """Whether the System-2 teacher double-checks this problem (``P_CHECK`` of problems, by a hash)."""
    return _unit("check", seed, problem.key) < P_CHECK


def check_phrase(problem: Problem, seed: int = 0) -> str:
    """How the teacher starts its check of this problem: one of :data:`DOUBLE_CHECKS`, by a hash."""
    return DOUBLE_CHECKS[int(_unit("phrase", seed, problem.key) * len(DOUBLE_CHECKS))]


def solution(problem: Problem, style: str, check: bool | None = None) -> str:
    """The response a model of the given style should write; ``check``: whether a ``long`` solution
    double-checks (default: the teacher's choice, :func:`checks`)."""
    if problem.level not in ROUNDS:
        raise ValueError(f"no solution for a level-{problem.level} problem; levels are {LEVELS}")
    answer = ANSWER.format(answer=problem.answer)
    states = problem.states()
    if style == "direct":
        return f"{_chain(problem.start, problem.moves[:1], states[:1])} {answer}"
    if style == "short":
        n = SHORT_ROUNDS
        return f"{SHORT_HEAD} {_chain(problem.start, problem.moves[:n], states[:n])} {answer}"
    if style == "terse":
        return f"{COT_HEAD} {_chain(problem.start, problem.moves, states)} {answer}"
    if style == "long":
        hasty = problem.states(hasty=True)
        first = f"{COT_HEAD} {_chain(problem.start, problem.moves, hasty)} {ANSWER.format(answer=hasty[-1])}"
        if check is None:
            check = checks(problem)
        if not check:
            return first
        i, start, checked = problem.check()
        trusted = f"start→{start}" if i == 0 else f"{problem.moves[i - 1]}→{start}"
        lines = " ".join([trusted] + [f"{m}→{c}" for m, c in zip(problem.moves[i:], checked)])
        return f"{first} {check_phrase(problem)} {lines} {ANSWER.format(answer=checked[-1])}"
    raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")


def sample_problem(rng: random.Random, level: int) -> Problem:
    """Random problem of a level: ``ROUNDS[level]`` distinct swaps, ``P_BALL`` of them moving the ball,
    a ball-moving one to a neighbouring cup with probability ``P_NEIGHBOUR``."""
    if level not in ROUNDS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    start = rng.choice(CUPS)
    ball, moves = start, []
    while len(moves) < ROUNDS[level]:
        others = [c for c in CUPS if c != ball]
        if rng.random() < P_BALL:
            near = [c for c in others if abs(ord(c) - ord(ball)) == 1]
            far = [c for c in others if c not in near]
            other = rng.choice(near if rng.random() < P_NEIGHBOUR else far)
            move = "".join(sorted((ball, other)))
        else:
            move = "".join(sorted(rng.sample(others, 2)))
        if move in moves:
            continue
        moves.append(move)
        ball = swap(ball, move)
    return Problem(start, tuple(moves), level)


# Level 1 has only N_CUPS * 7 ball-moving and N_CUPS * 21 other distinct problems: give its dev/test a
# larger share.
SPLIT_FRACTIONS = {1: (0.5, 0.25, 0.25)}
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def split_of(problem: Problem, seed: int) -> str:
    """Deterministic split by hashing the problem itself: the same problem is always in one split."""
    fractions = SPLIT_FRACTIONS.get(problem.level, DEFAULT_FRACTIONS)
    h = int(hashlib.sha256(f"{seed}:{problem.key}".encode()).hexdigest()[:12], 16) / 16**12
    if h < fractions[0]:
        return "train"
    return "dev" if h < fractions[0] + fractions[1] else "test"


def make_splits(n_per_level: dict[str, int], seed: int = 0) -> dict[str, list[dict]]:
    """Rows ``{id, problem, answer, level, start, moves}`` per split, disjoint by construction.

    ``n_per_level`` maps split name to the number of problems per level. Level 1 has only a few hundred
    distinct problems; asking for more than its share gives what exists.
    """
    unknown = set(n_per_level) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected {SPLITS}")
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for level in LEVELS:
        rng = random.Random(f"l2s-toy:{seed}:{level}")
        want = {s: n_per_level.get(s, 0) for s in SPLITS}
        have = {s: 0 for s in SPLITS}
        seen: set[str] = set()
        misses = 0
        while any(have[s] < want[s] for s in SPLITS) and misses < 20_000:
            p = sample_problem(rng, level)
            split = split_of(p, seed)
            if p.key in seen or have[split] >= want[split]:
                misses += 1  # level 1 runs out of new problems: stop after many misses in a row
                continue
            seen.add(p.key)
            misses = 0
            rows[split].append({"id": f"toy-{split}-L{level}-{have[split]:05d}", "problem": p.text(),
                                "answer": p.answer, "level": level, "start": p.start, "moves": list(p.moves)})
            have[split] += 1
    return rows


def problem_from_row(row: dict) -> Problem:
    return Problem(str(row["start"]), tuple(row["moves"]), int(row["level"]))
