"""Graded samples of the long and the short model, grouped per problem.

Input rows are evaluation generations (``runs/<name>/generations.jsonl``, see the run-directory
contract): one row per response with ``id``, ``prompt``, ``response``, ``correct``, ``n_tokens``,
``sample`` and optionally ``dataset`` and ``level``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from l2s.io import read_jsonl

REQUIRED_FIELDS = ("id", "prompt", "response", "correct", "n_tokens", "sample")


@dataclass(frozen=True)
class Sample:
    style: str  # "long" or "short": which model wrote it
    sample: int
    response: str
    correct: bool
    n_tokens: int


@dataclass
class Group:
    """One problem: its prompt and the K samples of each model."""

    dataset: str
    id: str
    level: int | None
    prompt: str
    long: list[Sample] = field(default_factory=list)
    short: list[Sample] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.dataset}:{self.id}"


def generations_path(path: str | Path) -> Path:
    """A run directory (its ``generations.jsonl``) or a JSONL file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / "generations.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass an evaluation run directory or its generations.jsonl")
    return path


def load_samples(path: str | Path, style: str) -> dict[tuple[str, str], tuple[dict, list[Sample]]]:
    """Rows of one model's run, checked and grouped: ``(dataset, id) -> (first row, samples)``."""
    path = generations_path(path)
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path}: no generations (empty file)")
    out: dict[tuple[str, str], tuple[dict, list[Sample]]] = {}
    seen: set[tuple[str, str, int]] = set()
    for i, row in enumerate(rows, 1):
        missing = [f for f in REQUIRED_FIELDS if f not in row]
        if missing:
            raise ValueError(f"{path}: row {i} lacks field(s) {missing} (needs {list(REQUIRED_FIELDS)})")
        if not isinstance(row["correct"], bool) or not isinstance(row["n_tokens"], int) or row["n_tokens"] < 0:
            raise ValueError(f"{path}: row {i}: 'correct' must be a bool and 'n_tokens' a non-negative int, "
                             f"got {row['correct']!r} and {row['n_tokens']!r}")
        if not isinstance(row["response"], str) or not isinstance(row["prompt"], str):
            raise ValueError(f"{path}: row {i}: 'prompt' and 'response' must be strings")
        key = (str(row.get("dataset") or ""), str(row["id"]))
        if (*key, int(row["sample"])) in seen:
            raise ValueError(f"{path}: row {i}: duplicate sample {row['sample']} of problem {key[1]!r}")
        seen.add((*key, int(row["sample"])))
        first, samples = out.setdefault(key, (row, []))
        if row["prompt"] != first["prompt"]:
            raise ValueError(f"{path}: row {i}: problem {key[1]!r} has two different prompts")
        samples.append(Sample(style, int(row["sample"]), row["response"], row["correct"], row["n_tokens"]))
    for _, samples in out.values():
        samples.sort(key=lambda s: s.sample)
    return out


def build_groups(long_path: str | Path, short_path: str | Path, require_same_problems: bool = True) -> list[Group]:
    """Pair up the two runs problem by problem, sorted by (dataset, id): row order does not matter."""
    long, short = load_samples(long_path, "long"), load_samples(short_path, "short")
    only_long, only_short = sorted(set(long) - set(short)), sorted(set(short) - set(long))
    if (only_long or only_short) and require_same_problems:
        raise ValueError(
            f"the runs cover different problems: {len(only_long)} only in the long run (e.g. "
            f"{[k[1] for k in only_long[:3]]}), {len(only_short)} only in the short run (e.g. "
            f"{[k[1] for k in only_short[:3]]}); finish both runs or set require_same_problems=false")
    common = sorted(set(long) & set(short))
    if not common:
        raise ValueError("the long and short runs have no problem in common")
    groups = []
    for key in common:
        row, long_samples = long[key]
        if row["prompt"] != short[key][0]["prompt"]:
            raise ValueError(f"problem {key[1]!r}: the long and short runs sent different prompts; "
                             "both models must be sampled with the same prompt")
        level = row.get("level")
        groups.append(Group(key[0], key[1], None if level is None else int(level), row["prompt"],
                            long_samples, short[key][1]))
    return groups


_CHATML_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n", re.S)
_GEN_PROMPT = "<|im_start|>assistant\n"


def chatml_messages(prompt: str) -> list[dict[str, str]]:
    """Messages of a ChatML prompt ending in the generation prompt (Qwen2.5 and the toy template).

    Exact inverse of the template: re-rendering the messages gives the prompt back, so DPO trains on
    the context the model was sampled with.
    """
    messages, pos = [], 0
    for m in _CHATML_TURN.finditer(prompt):
        if m.start() != pos:
            break
        messages.append({"role": m.group(1), "content": m.group(2)})
        pos = m.end()
    if not messages or prompt[pos:] != _GEN_PROMPT:
        raise ValueError(f"prompt is not a ChatML chat ending in the generation prompt: {prompt[:80]!r}...; "
                         "pass a problems file (JSONL with id and problem or messages) instead")
    return messages


def load_problem_messages(path: str | Path) -> dict[tuple[str, str], list[dict[str, str]]]:
    """``(dataset, id) -> messages`` from a JSONL of problems: ``messages``, or ``problem`` as a user turn."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problems file {path} not found")
    out = {}
    for i, row in enumerate(read_jsonl(path), 1):
        if "id" not in row or not ("messages" in row or "problem" in row):
            raise ValueError(f"{path}: row {i} needs 'id' and 'messages' or 'problem'")
        messages = row.get("messages") or [{"role": "user", "content": row["problem"]}]
        out[(str(row.get("dataset") or ""), str(row["id"]))] = messages
    return out
