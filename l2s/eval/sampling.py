"""One sampling configuration for every generation backend (vLLM's ``SamplingParams`` semantics).

Paper defaults: greedy decoding (``temperature=0``) with 10240 new tokens for slow/merged models and
8192 for quick ones (Wu et al. 2025); Ada-R1 samples K responses per problem with
``SamplingConfig(n=K, temperature=0.6, top_p=0.95)`` (Luo et al. 2025).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = -1  # -1 = off
    max_new_tokens: int = 1024
    n: int = 1  # samples per prompt
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "stop", tuple(self.stop or ()))
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k != -1 and self.top_k < 1:
            raise ValueError(f"top_k must be -1 (off) or >= 1, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.n > 1 and self.greedy:
            raise ValueError(f"n={self.n} samples with temperature 0 would be {self.n} identical "
                             "greedy responses; set temperature > 0")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "sampling") -> SamplingConfig:
        """A config from a mapping, type-checked (:func:`l2s.config.parse`)."""
        from l2s.config import parse

        return parse(cls, d, where)


def request_seed(seed: int, *key) -> int:
    """A per-request seed from the run seed and the request's key (dataset, id, sample): a
    response does not depend on which other requests share its batch."""
    blob = ":".join(str(k) for k in (seed, *key)).encode()
    return int(hashlib.sha256(blob).hexdigest()[:8], 16)
