"""Task-vector methods: average, task arithmetic, TIES, DARE, linear.

Trimming uses ``kthvalue`` (one selection pass, O(n)) rather than a sort: on CPU a full argsort of a
large weight matrix is several times slower.
"""

from __future__ import annotations

import torch

from l2s.merge.methods import Param, alpha_param, finite, register


@register("average", needs_base=False)
def average(base, models):
    """Model soup (Wortsman et al. 2022): θ = (1/n) Σ_i θ_i. The base is not used."""
    out = models[0].clone()
    for m in models[1:]:
        out += m
    return out.div_(len(models))


@register("task_arithmetic", params={"alpha": alpha_param(0.7)})
def task_arithmetic(base, models, alpha):
    """Task arithmetic (Ilharco et al. 2023): θ = θ_0 + α Σ_i δ_i. Wu et al. Table 7: α = 0.7."""
    total = torch.zeros_like(base)
    for m in models:
        total += m - base
    return base + alpha * total


def trim_threshold(magnitudes: torch.Tensor, k: float) -> torch.Tensor | None:
    """The ⌊k·n⌋-th smallest of ``magnitudes`` (None when nothing is to be dropped)."""
    flat = magnitudes.reshape(-1)
    n_drop = int(k * flat.numel())
    if n_drop == 0:
        return None
    return torch.kthvalue(flat, n_drop).values


def trim_delta(delta: torch.Tensor, k: float, threshold: float | torch.Tensor | None = None) -> torch.Tensor:
    """TIES TRIM: zero the fraction ``k`` of entries of smallest magnitude.

    Keeps δ_j where |δ_j| > t, with t the ⌊k·n⌋-th smallest |δ| of this tensor, or the given
    ``threshold`` (a whole-model threshold for ``trim=global``). With distinct magnitudes exactly
    ⌊k·n⌋ entries are dropped; entries tied with t are dropped too. ``threshold=None`` and k=0 keep all.
    """
    t = trim_threshold(delta.abs(), k) if threshold is None else threshold
    if t is None or k == 0:
        return delta
    return torch.where(delta.abs() > t, delta, torch.zeros((), dtype=delta.dtype))


@register("ties", params={
    "k": Param(0.8, "TRIM ratio: the fraction of each task vector's smallest-magnitude entries dropped "
                    "(k=0.8 keeps the top 20%; Wu et al. Table 7)", "0 <= k <= 1",
               lambda v: finite(v) and 0 <= v <= 1),
    "alpha": alpha_param(1.0),
    "trim": Param("tensor", "where the TRIM threshold is taken: per tensor (default) or over the whole "
                            "flattened task vector, as the original MergeLM code", "tensor or global",
                  lambda v: v in ("tensor", "global"), str, ("tensor", "global")),
})
def ties(base, models, k, alpha, trim="tensor", thresholds=None):
    """TIES-Merging (Yadav et al. 2023): trim, elect sign, disjoint mean, scale.

    δ̂_i = TRIM_k(δ_i);  γ = sgn(Σ_i δ̂_i);  τ_j = mean over {i : δ̂_ij ≠ 0, sgn δ̂_ij = γ_j} of δ̂_ij
    (0 where no model agrees);  θ = θ_0 + α τ. Entries with Σ_i δ̂_ij = 0 get τ_j = 0.
    ``thresholds`` (one per model) are the whole-model TRIM thresholds of ``trim="global"``.
    """
    deltas = [trim_delta(m - base, k, None if thresholds is None else thresholds[i])
              for i, m in enumerate(models)]
    sign = torch.sign(sum(deltas[1:], deltas[0].clone()))
    num = torch.zeros_like(base)
    count = torch.zeros_like(base)
    for d in deltas:
        agree = (torch.sign(d) == sign) & (d != 0)
        num += torch.where(agree, d, torch.zeros((), dtype=d.dtype))
        count += agree
    return base + alpha * (num / count.clamp_min(1))


@register("dare", kind="modifier", params={
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
    keep = torch.rand(delta.shape, generator=generator, dtype=torch.float32) >= p
    return torch.where(keep, delta / (1 - p), torch.zeros((), dtype=delta.dtype))


@register("linear", needs_base=False, n_models=(2, 2), params={
    "alpha": Param(0.8, "weight of the first (long-CoT) model; Ada-R1's configs use 0.8", "0 <= α <= 1",
                   lambda v: finite(v) and 0 <= v <= 1),
})
def linear(base, models, alpha):
    """Ada-R1 merge (Luo et al. 2025, arXiv 2504.21659): θ = α θ_L + (1−α) θ_S, models = [θ_L, θ_S]."""
    long, short = models
    return alpha * long + (1 - alpha) * short
