"""Per-response measures: reflection keywords, thinking/answer split, interim answer, length in tokens.

A response is *reflective* when it contains any of Wu et al. (2025)'s self-reflection keywords
(case-insensitive): wait, re-examine, recap, double-check, let me check, let me just check, let me
just verify. ``keyword_hits`` counts all (non-overlapping, whole-word) occurrences of them.

Whether the reflection *corrects* anything is read off the **interim answer** (:func:`interim_answer`):
the last ``\\boxed{}`` before the first of those keywords, graded like the final answer
(:mod:`l2s.eval.grading`) and compared with it per group in :mod:`l2s.eval.metrics`.
"""

from __future__ import annotations

import re

from l2s.data import last_boxed

REFLECTION_KEYWORDS = ("wait", "re-examine", "recap", "double-check", "let me check",
                       "let me just check", "let me just verify")
THINK_END = "</think>"

# Longest first, so "let me just check" is one hit, not also a "let me check"-like partial match.
_KEYWORDS = re.compile(
    r"(?<![\w-])(?:" + "|".join(re.escape(k).replace(r"\ ", r"\s+")
                                 for k in sorted(REFLECTION_KEYWORDS, key=len, reverse=True)) + r")(?![\w-])",
    re.IGNORECASE)


def keyword_hits(text: str) -> int:
    """Number of reflection-keyword occurrences (whole words: "await" and "waiting" do not count)."""
    return len(_KEYWORDS.findall(text))


def is_reflective(text: str) -> bool:
    return _KEYWORDS.search(text) is not None


def first_keyword(text: str) -> int | None:
    """Offset of the first reflection keyword (the matcher of :func:`keyword_hits`), None without one."""
    m = _KEYWORDS.search(text)
    return None if m is None else m.start()


def interim_answer(response: str) -> str | None:
    """The answer a response gave *before* it reflected: the content of the last ``\\boxed{}``
    (:func:`l2s.data.last_boxed`) in the text before its first reflection keyword of Wu et al. 2025
    (:data:`REFLECTION_KEYWORDS`, whole words as in :func:`keyword_hits`: "await" is none). ``</think>``
    plays no part: the prefix may end inside the thinking or after it. None when the response has no
    keyword (no reflection to judge) or no box before it — R1-style outputs rarely box an answer before
    their first "Wait", so such a response does not count towards the correction rates."""
    i = first_keyword(response)
    return None if i is None else last_boxed(response[:i])


def split_thinking(response: str) -> tuple[str | None, str]:
    """(thinking, answer): split at the last ``</think>``; without one, (None, whole response)."""
    i = response.rfind(THINK_END)
    if i < 0:
        return None, response
    thinking = response[:i]
    if thinking.lstrip().startswith("<think>"):
        thinking = thinking.lstrip()[len("<think>"):]
    return thinking, response[i + len(THINK_END):]


def measure(response: str) -> dict:
    """Text measures of one response (``n_tokens`` comes from the generator or a tokenizer)."""
    thinking, answer = split_thinking(response)
    hits = keyword_hits(response)
    return {"reflective": hits > 0, "keyword_hits": hits, "has_think_end": thinking is not None,
            "thinking_chars": len(thinking) if thinking is not None else None,
            "answer_chars": len(answer)}


def count_tokens(tokenizer, texts: list[str], batch_size: int = 256) -> list[int]:
    """Token counts of saved texts, re-encoded with the model's tokenizer (no special tokens added)."""
    out: list[int] = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], add_special_tokens=False)["input_ids"]
        out += [len(ids) for ids in enc]
    return out
