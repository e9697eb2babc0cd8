"""DARE (Yu et al. 2024): drop-and-rescale the task vectors before a task-vector merge.

A ``pre`` modifier: the executor rewrites each model as θ_0 + DARE(θ_i − θ_0) before the core method
sees it. The masks are drawn from a generator seeded by (seed, tensor name, model index)
(:func:`dare_generator`), fresh for every pass over a tensor's blocks, so they depend neither on the
order of the tensors, nor on the block size, nor on the number of threads.
"""

from __future__ import annotations

import hashlib

import torch

from l2s.merge.methods import Param, Variant, finite, register

INT_OF_SIZE = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def dare_generator(seed: int, name: str, model_index: int) -> torch.Generator:
    """A generator seeded from (seed, tensor name, model): masks independent of order and threads."""
    digest = hashlib.sha256(f"{seed}\0{name}\0{model_index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def tensor_pass(merger, name: str) -> list[torch.Generator]:
    """Fresh generators of tensor ``name``, one per model (a pass over its blocks draws the same masks
    as one draw over the whole tensor: the generator's stream is sequential)."""
    return [dare_generator(merger.cfg.seed, name, i) for i in range(len(merger.models))]


def rewrite(merger, state, generators, i: int, delta: torch.Tensor) -> torch.Tensor:
    return dare(delta, merger.params["p"], generators[i])


@register("dare", kind="pre", combines_with=("average", "task_arithmetic", "ties"),
          paper="Yu et al. 2024, arXiv 2311.03099", url="https://arxiv.org/abs/2311.03099",
          tensor_pass=tensor_pass, rewrite=rewrite, variants=(
              Variant("dare", "dare+average", "DARE", 4, ("dare_average",)),
              Variant("dare_ta", "dare+task_arithmetic", "DARE-TA", 5, ("dare-ta", "dare_task_arithmetic")),
              Variant("dare_ties", "dare+ties", "DARE-TIES", 6, ("dare-ties",)),
          ), params={
              "p": Param(0.3, "DARE drop rate (Wu et al. Table 7: 0.3 for 1.5B/7B, 0.4 for 14B)", "0 <= p < 1",
                         lambda v: finite(v) and 0 <= v < 1),
          })
def dare(delta, p, generator):
    """DARE (Yu et al. 2024): drop each δ entry with probability p, rescale the rest by 1/(1−p).

    δ̃ = m ⊙ δ / (1−p), m_j ~ Bernoulli(1−p), drawn from ``generator`` (seeded per tensor by the
    executor, so masks do not depend on order or thread count). p=0 returns δ unchanged.
    """
    if p == 0:
        return delta
    drop = torch.rand(delta.shape, generator=generator, dtype=torch.float32)  # u; dropped where u < p
    drop.neg_().add_(p).clamp_min_(0).sign_()  # [p − u > 0]
    out = delta / (1 - p)
    bits = INT_OF_SIZE[out.element_size()]  # x AND (all ones | zero): x itself, or +0
    out.view(bits).bitwise_and_(drop.to(bits).sub_(1))
    return out
