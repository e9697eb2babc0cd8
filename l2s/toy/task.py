"""The toy reasoning task: a shell game with exact answers and difficulty levels 1-5.

``N_CUPS`` cups stand in a row and a ball is under one of them. ``N_SLOTS`` rounds follow; in each
round the dealer swaps two cups (``2<>5``) or passes (``--``). Level ``L`` has ``SWAPS_PER_LEVEL[L]``
swaps, in the first rounds; the rest are passes. Question: where is the ball at the end?

Why this task (see issue "Toy world"): the *direct* answer composes up to 8 permutations in one
forward pass — hopeless for a tiny transformer at level 5, trivial at level 1 — while each
chain-of-thought step is local: copy the round's move (always at the same distance back, because
every problem has the same length and every CoT line is as long as a round) and apply it to the
previous state (two tokens back). Every number, move and state is one token.

Response styles, all ending in ``The answer is \\boxed{c}``:

- ``direct`` (System 1): a glance at the first round (``<move> →<cup>``), then the answer: exact at level 1,
  a one-pass guess of every later swap above it. (A bare answer does not train: a quick model then
  settles on "the ball stays where it started", right 75% of the time at level 1, and learns nothing
  more, while the same one-swap step is learned at once as a CoT line.)
- ``terse`` (a base model's own CoT): one line per round, ``<move> →<cup>``;
- ``long`` (System 2): the terse chain, then ``Wait , let me double-check .`` and a re-derivation of
  the real swaps (so it grows with the level), then the answer — deliberate overthinking;
- ``short`` (Ada-R1's short-CoT model): the chain of the first ``SHORT_ROUNDS`` rounds only, then the
  answer: exact while all swaps fall in those rounds (levels 1-3), a guess for the rest beyond them
  (levels 4-5) — short CoT skips steps, which costs accuracy on hard problems only.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

N_CUPS = 8
N_SLOTS = 8
LEVELS = (1, 2, 3, 4, 5)
SWAPS_PER_LEVEL = {1: 1, 2: 2, 3: 4, 4: 6, 5: 8}
PASS = "--"
SPLITS = ("train", "dev", "test")

CUPS = [str(c) for c in range(1, N_CUPS + 1)]
MOVES = [f"{a}<>{b}" for a in range(1, N_CUPS + 1) for b in range(a + 1, N_CUPS + 1)]
STATES = [f"→{c}" for c in CUPS]
ANSWERS = [f"\\boxed{{{c}}}" for c in CUPS]

PROBLEM_HEAD = "Eight cups stand in a row . The ball is under cup {start} . Moves :"
PROBLEM_TAIL = ". Where is the ball ?"
COT_HEAD = "Let me track the ball ."
DOUBLE_CHECK = "Wait , let me double-check ."
SHORT_HEAD = "Let me be quick ."
SHORT_ROUNDS = 4
ANSWER = "The answer is \\boxed{{{answer}}}"
STYLES = ("direct", "terse", "long", "short")


@dataclass(frozen=True)
class Problem:
    start: int
    moves: tuple[str, ...]  # N_SLOTS entries: "a<>b" or PASS
    level: int

    @property
    def key(self) -> str:
        return f"{self.start}|{' '.join(self.moves)}"

    def states(self) -> list[int]:
        """Ball position after each round (one entry per slot)."""
        out, ball = [], self.start
        for move in self.moves:
            if move != PASS:
                a, b = (int(x) for x in move.split("<>"))
                ball = b if ball == a else a if ball == b else ball
            out.append(ball)
        return out

    @property
    def answer(self) -> int:
        return self.states()[-1]

    def text(self) -> str:
        slots = " ".join(f"{m} ," for m in self.moves)[:-2]
        return f"{PROBLEM_HEAD.format(start=self.start)} {slots} {PROBLEM_TAIL}"


def _chain(moves, states) -> str:
    return " ".join(f"{m} →{s}" for m, s in zip(moves, states))


def solution(problem: Problem, style: str) -> str:
    """The response a model of the given style should write."""
    answer = ANSWER.format(answer=problem.answer)
    states = problem.states()
    if style == "direct":
        return f"{_chain(problem.moves[:1], states[:1])} {answer}"
    if style == "short":
        return f"{SHORT_HEAD} {_chain(problem.moves[:SHORT_ROUNDS], states[:SHORT_ROUNDS])} {answer}"
    chain = f"{COT_HEAD} {_chain(problem.moves, states)}"
    if style == "terse":
        return f"{chain} {answer}"
    if style == "long":
        if problem.level not in SWAPS_PER_LEVEL:
            raise ValueError(f"no long solution for a level-{problem.level} problem")
        k = SWAPS_PER_LEVEL[problem.level]
        return f"{chain} {DOUBLE_CHECK} {_chain(problem.moves[:k], states[:k])} {answer}"
    raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")


def sample_problem(rng: random.Random, level: int) -> Problem:
    """Random problem of a level. Half the swaps move the ball, so its path is never trivial."""
    if level not in SWAPS_PER_LEVEL:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    start = rng.randint(1, N_CUPS)
    ball, moves = start, []
    for _ in range(SWAPS_PER_LEVEL[level]):
        if rng.random() < 0.5:
            other = rng.choice([c for c in range(1, N_CUPS + 1) if c != ball])
            a, b = sorted((ball, other))
        else:
            a, b = sorted(rng.sample([c for c in range(1, N_CUPS + 1) if c != ball], 2))
        moves.append(f"{a}<>{b}")
        ball = b if ball == a else a if ball == b else ball
    moves += [PASS] * (N_SLOTS - len(moves))
    return Problem(start, tuple(moves), level)


# Level 1 has only N_CUPS * 28 = 224 distinct problems: give its dev/test a larger share.
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
    """Rows ``{id, problem, answer, level}`` per split, disjoint by construction.

    ``n_per_level`` maps split name to the number of problems per level. Level 1 has only
    ``N_CUPS * 28`` distinct problems; asking for more than its share gives what exists.
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
                                "answer": str(p.answer), "level": level,
                                "start": p.start, "moves": list(p.moves)})
            have[split] += 1
    return rows


def problem_from_row(row: dict) -> Problem:
    return Problem(int(row["start"]), tuple(row["moves"]), int(row["level"]))
