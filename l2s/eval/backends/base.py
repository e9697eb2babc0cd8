"""What a backend takes and gives: requests in, generations (token ids, text, finished) out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from l2s.eval.sampling import SamplingConfig


@dataclass(frozen=True)
class Request:
    key: tuple  # (dataset, id, sample): identifies the response in generations.jsonl
    prompt: str
    max_new_tokens: int | None = None  # this request's own cap (e.g. to fit the model's context); None: none

    def __post_init__(self):
        if self.max_new_tokens is not None and (not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1):
            raise ValueError(f"Request.max_new_tokens must be an integer >= 1 or None, got {self.max_new_tokens!r}")

    def budget(self, sampling: SamplingConfig) -> int:
        """How many tokens this request may generate: ``sampling.max_new_tokens``, or its own cap if smaller."""
        if self.max_new_tokens is None:
            return sampling.max_new_tokens
        return min(sampling.max_new_tokens, self.max_new_tokens)


@dataclass(frozen=True)
class Generation:
    token_ids: list[int]  # generated tokens, without padding and without the final eos
    text: str
    finished: bool  # ended by eos or a stop string
    truncated: bool  # hit its token budget (Request.budget) without finishing


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Text before the first stop string, and whether one occurred."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


class Backend:
    """Generates one response per request, of at most :meth:`Request.budget` new tokens. ``generate``
    yields lists of (request, generation) as batches complete, so callers can save results as they arrive."""

    tokenizer = None

    def generate(self, requests: list[Request], sampling: SamplingConfig,
                 progress: bool = True) -> Iterator[list[tuple[Request, Generation]]]:
        raise NotImplementedError

    def model_info(self) -> dict:
        return {}

    def close(self) -> None:
        pass
