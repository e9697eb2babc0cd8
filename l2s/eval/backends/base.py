"""What a backend takes and gives: requests in, generations (token ids, text, finished) out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from l2s.eval.sampling import SamplingConfig


@dataclass(frozen=True)
class Request:
    key: tuple  # (dataset, id, sample): identifies the response in generations.jsonl
    prompt: str


@dataclass(frozen=True)
class Generation:
    token_ids: list[int]  # generated tokens, without padding and without the final eos
    text: str
    finished: bool  # ended by eos or a stop string
    truncated: bool  # hit max_new_tokens without finishing


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Text before the first stop string, and whether one occurred."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


class Backend:
    """Generates one response per request. ``generate`` yields lists of (request, generation) as
    batches complete, so callers can save results as they arrive."""

    tokenizer = None

    def generate(self, requests: list[Request], sampling: SamplingConfig,
                 progress: bool = True) -> Iterator[list[tuple[Request, Generation]]]:
        raise NotImplementedError

    def model_info(self) -> dict:
        return {}

    def close(self) -> None:
        pass
