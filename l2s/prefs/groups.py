"""Graded samples of the long and the short model, grouped per problem.

Input rows are evaluation generations (``runs/<name>/generations.jsonl``, see the run-directory
contract): one row per response with ``id``, ``prompt``, ``response``, ``correct``, ``n_tokens``,
``sample`` and optionally ``dataset``, ``level`` and ``messages``.

The prompt of a pair comes from the rows, never from parsing a rendered prompt (:func:`pair_prompt`):

- ``messages`` a list (chat prompts ``qwen25-math-cot``, ``chat``): the chat the prompt rendered
  through the model's own template, whatever the template (ChatML, R1-distill's, the toy's). Pairs use
  TRL's conversational format plus each record's ``prompt_text``: ``l2s dpo`` trains on that text and the raw
  responses (the chat template is not re-applied, see :mod:`l2s.prefs.template`);
- ``messages`` null (text prompts ``qwen25-math-cot-literal``, ``cot``, ``raw``): the string sent is the
  prompt itself, so the row's ``prompt`` is the pair's prompt, in TRL's standard (text) format;
- no ``messages`` field (a run written before l2s stored it): the ChatML prompt is read back by
  :func:`chatml_messages` (exact for Qwen2.5 and the toy template, see its docstring); any other
  prompt is an error that says to sample again or to pass a problems file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2s.io import read_json, read_jsonl, read_jsonl_lines

REQUIRED_FIELDS = ("id", "prompt", "response", "correct", "n_tokens", "sample")


@dataclass(frozen=True)
class Sample:
    style: str  # "long" or "short": which model wrote it
    sample: int
    response: str
    correct: bool
    n_tokens: int


# ``Group.messages`` of a run written before generation rows had a ``messages`` field.
LEGACY = "legacy"


@dataclass
class Group:
    """One problem: its prompt (the string sent, and the chat it rendered: a list of messages, None for
    a text prompt, :data:`LEGACY` for an old run without them) and the K samples of each model."""

    dataset: str
    id: str
    level: int | None
    prompt: str
    long: list[Sample] = field(default_factory=list)
    short: list[Sample] = field(default_factory=list)
    messages: list[dict[str, str]] | None | str = LEGACY

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


def _check_row(row: dict, where: str) -> None:
    """Field types of one generations row; ``where`` is its file and line."""
    missing = [f for f in REQUIRED_FIELDS if f not in row]
    if missing:
        raise ValueError(f"{where}: row lacks field(s) {missing} (needs {list(REQUIRED_FIELDS)})")
    if not isinstance(row["correct"], bool) or isinstance(row["n_tokens"], bool) or \
            not isinstance(row["n_tokens"], int) or row["n_tokens"] < 0:
        raise ValueError(f"{where}: 'correct' must be a bool and 'n_tokens' a non-negative int, "
                         f"got {row['correct']!r} and {row['n_tokens']!r}")
    if not isinstance(row["response"], str) or not isinstance(row["prompt"], str):
        raise ValueError(f"{where}: 'prompt' and 'response' must be strings")
    if isinstance(row["sample"], bool) or not isinstance(row["sample"], int) or row["sample"] < 0:
        raise ValueError(f"{where}: 'sample' must be a non-negative int, got {row['sample']!r}")
    if isinstance(row["id"], bool) or not isinstance(row["id"], (str, int)):
        raise ValueError(f"{where}: 'id' must be a string or an int, got {row['id']!r:.60}")
    if not isinstance(row.get("dataset"), (str, type(None))):
        raise ValueError(f"{where}: 'dataset' must be a string, got {row['dataset']!r:.60}")
    level = row.get("level")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
        raise ValueError(f"{where}: 'level' must be an int or null, got {level!r:.60}")
    if "messages" in row:
        check_messages(row["messages"], f"{where}: 'messages'", allow_none=True)


def load_samples(path: str | Path, style: str) -> dict[tuple[str, str], tuple[dict, list[Sample]]]:
    """Rows of one model's run, checked and grouped: ``(dataset, id) -> (first row, samples)``."""
    path = generations_path(path)
    lines = read_jsonl_lines(path)
    if not lines:
        raise ValueError(f"{path}: no generations (empty file)")
    out: dict[tuple[str, str], tuple[dict, list[Sample]]] = {}
    seen: set[tuple[str, str, int]] = set()
    for line, row in lines:
        where = f"{path}:{line}"
        _check_row(row, where)
        key = (str(row.get("dataset") or ""), str(row["id"]))
        if (*key, int(row["sample"])) in seen:
            raise ValueError(f"{where}: duplicate sample {row['sample']} of problem {key[1]!r}")
        seen.add((*key, int(row["sample"])))
        first, samples = out.setdefault(key, (row, []))
        if "messages" in row and "messages" not in first:  # a run resumed across the upgrade that added them
            first["messages"] = row["messages"]
        mine = row.get("messages", LEGACY)
        if row["prompt"] != first["prompt"] or mine not in (LEGACY, first.get("messages", LEGACY)):
            raise ValueError(f"{where}: problem {key[1]!r} has two different prompts (or messages)")
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
        other = short[key][0]
        if row["prompt"] != other["prompt"]:
            raise ValueError(f"problem {key[1]!r}: the long and short runs sent different prompts; "
                             "both models must be sampled with the same prompt")
        messages = _common_messages(row, other, key[1])
        level = row.get("level")
        groups.append(Group(key[0], key[1], None if level is None else int(level), row["prompt"],
                            long_samples, short[key][1], messages))
    return groups


def _common_messages(long_row: dict, short_row: dict, pid: str):
    """The problem's chat from whichever run recorded it (both must agree where both did)."""
    a, b = long_row.get("messages", LEGACY), short_row.get("messages", LEGACY)
    if a != LEGACY and b != LEGACY and a != b:
        raise ValueError(f"problem {pid!r}: the long and short runs rendered different chats ('messages'); "
                         "both models must be sampled with the same prompt")
    return a if a != LEGACY else b


def check_messages(messages: Any, where: str, allow_none: bool = False) -> None:
    """A chat is a non-empty list of ``{role, content}`` string dicts (or None for a text prompt)."""
    if messages is None and allow_none:
        return
    ok = isinstance(messages, list) and messages and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages)
    if not ok:
        raise ValueError(f"{where} must be a non-empty list of {{'role', 'content'}} strings"
                         f"{' or null' if allow_none else ''}, got {messages!r:.120}")


def pair_prompt(group: Group, source: str = "") -> list[dict[str, str]] | str:
    """The prompt of the problem's pairs: its chat (a list of messages), or the text sent (a string).

    Taken from the rows (see the module docstring). A run without ``messages`` falls back to reading
    its ChatML prompt back; ``source`` names the runs in the error when that is not possible.
    """
    if group.messages != LEGACY:
        return group.prompt if group.messages is None else group.messages
    try:
        return chatml_messages(group.prompt)
    except ValueError as e:
        raise ValueError(f"{source or 'the sample runs'}: rows have no 'messages' field (runs written before l2s "
                         f"stored each row's chat) and problem {group.id!r}'s prompt is not ChatML ({e}); "
                         "sample again with this version (delete the sample-long/sample-short runs and rerun "
                         "`l2s sample`), or pass --problems FILE (JSONL: id and problem or messages)") from None


def token_limit(path: str | Path) -> dict[str, Any] | None:
    """A run's new-token limit and how many responses hit it: ``metrics.json`` ``token_limit`` when the
    run recorded one, else the same numbers computed from its ``config.json`` and rows (older runs);
    None for a generations file outside a run directory, or a run without ``config.json``."""
    gen = generations_path(path)
    metrics, config = gen.parent / "metrics.json", gen.parent / "config.json"
    if gen.name != "generations.jsonl" or not config.is_file():
        return None
    if metrics.is_file() and "token_limit" in (m := read_json(metrics)):
        return m["token_limit"]
    rows = read_jsonl(gen)
    budgets = [r["budget"] for r in rows if "budget" in r]
    return {"max_new_tokens": read_json(config).get("sampling", {}).get("max_new_tokens"),
            "capped_by_context": len(budgets), "min_budget": min(budgets, default=None),
            "hit_limit": sum(bool(r.get("truncated")) for r in rows)}


_CHATML_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n", re.S)
_GEN_PROMPT = "<|im_start|>assistant\n"


def chatml_messages(prompt: str) -> list[dict[str, str]]:
    """Messages of a ChatML prompt ending in the generation prompt (Qwen2.5 and the toy template).

    Only for runs written before rows stored their ``messages`` (:func:`pair_prompt`). Exact inverse
    of the template: re-rendering the messages gives the prompt back, so DPO trains on the context the
    model was sampled with.
    """
    messages, pos = [], 0
    for m in _CHATML_TURN.finditer(prompt):
        if m.start() != pos:
            break
        messages.append({"role": m.group(1), "content": m.group(2)})
        pos = m.end()
    if not messages or prompt[pos:] != _GEN_PROMPT:
        raise ValueError(f"prompt is not a ChatML chat ending in the generation prompt: {prompt[:80]!r}...")
    return messages


def load_problem_messages(path: str | Path) -> dict[tuple[str, str], list[dict[str, str]]]:
    """``(dataset, id) -> messages`` from a JSONL of problems: ``messages``, or ``problem`` as a user turn."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problems file {path} not found")
    out = {}
    for line, row in read_jsonl_lines(path):
        where = f"{path}:{line}"
        if "id" not in row or not ("messages" in row or "problem" in row):
            raise ValueError(f"{where}: the row needs 'id' and 'messages' or 'problem'")
        if "messages" not in row and not isinstance(row["problem"], str):
            raise ValueError(f"{where}: 'problem' must be a string, got {row['problem']!r:.60}")
        messages = row.get("messages") or [{"role": "user", "content": row["problem"]}]
        check_messages(messages, f"{where}: 'messages'")
        out[(str(row.get("dataset") or ""), str(row["id"]))] = messages
    return out
