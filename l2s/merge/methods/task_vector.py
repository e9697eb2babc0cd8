"""Task-vector methods: average, task arithmetic, TIES, DARE, linear.

Trimming selects the k-th smallest magnitude (:func:`kth_smallest`: a sampled bracket, then
``kthvalue`` on the few entries inside it) rather than sorting: on CPU a full argsort of a large
weight matrix is several times slower, and so is a plain ``kthvalue`` of all entries (~20 ns per
entry here, against ~4 for the bracket).
The functions allocate as few tensor-sized temporaries as the formula allows (in-place updates of
their own intermediates); the results are those of the formulas, bit for bit.
"""

from __future__ import annotations

import math

import torch

from l2s.merge.methods import Param, alpha_param, finite, register

SELECT_DIRECT = 1 << 16  # up to this many entries, kthvalue of all of them
SELECT_BLOCK = 1 << 20  # entries per block when counting and gathering inside the bracket
INT_OF_SIZE = {2: torch.int16, 4: torch.int32, 8: torch.int64}


@register("average", needs_base=False, elementwise=True)
def average(base, models):
    """Model soup (Wortsman et al. 2022): θ = (1/n) Σ_i θ_i. The base is not used."""
    out = models[0].clone()
    for m in models[1:]:
        out += m
    return out.div_(len(models))


@register("task_arithmetic", elementwise=True, params={"alpha": alpha_param(0.7)})
def task_arithmetic(base, models, alpha):
    """Task arithmetic (Ilharco et al. 2023): θ = θ_0 + α Σ_i δ_i. Wu et al. Table 7: α = 0.7."""
    total = models[0] - base
    for m in models[1:]:
        total += m - base
    return total.mul_(alpha).add_(base)


def kth_smallest(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest entry (1-based) of ``x``: exactly ``torch.kthvalue(x.reshape(-1), k).values``.

    Floyd–Rivest style selection: two order statistics of a strided sample of m ≈ (4n)^(2/3) entries
    bracket the answer, lo ≤ x_(k) ≤ hi, with a margin of 5 standard deviations of the sample rank
    plus 16; counting the entries below lo and selecting among those in [lo, hi] (a few percent of
    x) gives the exact value. If the bracket misses, the plain ``kthvalue`` of all entries answers.
    """
    flat = x.reshape(-1)
    n = flat.numel()
    if n <= SELECT_DIRECT:
        return torch.kthvalue(flat, k).values
    sample = flat[:: max(1, n // int((4 * n) ** (2 / 3)))]
    m = sample.numel()
    q = k / n
    pos, margin = q * m, 5 * math.sqrt(m * q * (1 - q)) + 16
    lo = torch.kthvalue(sample, max(1, int(pos - margin))).values
    hi = torch.kthvalue(sample, min(m, int(pos + margin) + 1)).values
    below, inside = 0, []
    ge, le = torch.empty(SELECT_BLOCK, dtype=torch.bool), torch.empty(SELECT_BLOCK, dtype=torch.bool)
    for block in flat.split(SELECT_BLOCK):
        n_block = block.numel()
        in_band = torch.ge(block, lo, out=ge[:n_block])
        below += n_block - int(torch.count_nonzero(in_band))
        in_band.logical_and_(torch.le(block, hi, out=le[:n_block]))
        inside.append(block[in_band])
    band = torch.cat(inside)
    if not below < k <= below + band.numel():
        return torch.kthvalue(flat, k).values
    return lo.clone() if lo == hi else torch.kthvalue(band, k - below).values


def trim_threshold(magnitudes: torch.Tensor, k: float) -> torch.Tensor | None:
    """The ⌊k·n⌋-th smallest of ``magnitudes`` (None when nothing is to be dropped)."""
    n_drop = int(k * magnitudes.numel())
    if n_drop == 0:
        return None
    return kth_smallest(magnitudes, n_drop)


def trim_delta(delta: torch.Tensor, k: float, threshold: float | torch.Tensor | None = None) -> torch.Tensor:
    """TIES TRIM: zero the fraction ``k`` of entries of smallest magnitude.

    Keeps δ_j where |δ_j| > t, with t the ⌊k·n⌋-th smallest |δ| of this tensor, or the given
    ``threshold`` (a whole-model threshold for ``trim=global``). With distinct magnitudes exactly
    ⌊k·n⌋ entries are dropped; entries tied with t are dropped too. ``threshold=None`` and k=0 keep all.
    """
    t = trim_threshold(delta.abs(), k) if threshold is None else threshold
    return delta if t is None or k == 0 else _keep_above(delta.clone(), t)


# The masks below are float 0/1 tensors built with arithmetic (sign of a clamped difference, exact:
# for floats a > b ⇔ a − b > 0) rather than bool tensors: on CPU, comparisons, ``where`` and
# ``masked_fill`` cost several times more than a float pass. ``+ 0.0`` turns the −0 of a negative
# entry times 0 into +0, so the results equal those of ``where(mask, x, 0)`` bit for bit.

def _keep_above(d: torch.Tensor, t) -> torch.Tensor:
    """δ where |δ| > t, else +0 — in place on ``d``."""
    keep = d.abs().sub_(float(t)).clamp_min_(0).sign_()
    return d.mul_(keep).add_(0.0)


@register("ties", elementwise=True, params={
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
    ``thresholds`` (one per model; None keeps every entry) are given thresholds: the whole-model ones
    of ``trim="global"``, or the executor's per-tensor ones when it merges a tensor block by block.

    Computed as τ = γ · Σ_i max(γ δ̂_i, 0) / max(#{i : γ δ̂_i > 0}, 1): the agreeing entries all have
    the sign γ, and a sum of same-signed floats is the negated sum of their magnitudes, exactly.
    """
    deltas = []
    for i, m in enumerate(models):
        d = m - base
        t = trim_threshold(d.abs(), k) if thresholds is None else thresholds[i]
        deltas.append(d if t is None or k == 0 else _keep_above(d, t))
    sign = deltas[0].clone()
    for d in deltas[1:]:
        sign += d
    sign.sign_()
    magnitude = torch.zeros_like(base)
    count = torch.zeros_like(base)
    for d in deltas:
        agreeing = d.mul_(sign).clamp_min_(0)  # |δ̂_i| where sgn δ̂_i = γ, else 0
        magnitude += agreeing
        count += agreeing.sign_()
    return magnitude.mul_(sign).div_(count.clamp_min_(1)).mul_(alpha).add_(base)


@register("dare", kind="modifier", elementwise=True, params={
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


@register("linear", needs_base=False, n_models=(2, 2), elementwise=True, params={
    "alpha": Param(0.8, "weight of the first (long-CoT) model; Ada-R1's configs use 0.8", "0 <= α <= 1",
                   lambda v: finite(v) and 0 <= v <= 1),
})
def linear(base, models, alpha):
    """Ada-R1 merge (Luo et al. 2025, arXiv 2504.21659): θ = α θ_L + (1−α) θ_S, models = [θ_L, θ_S]."""
    long, short = models
    return alpha * long + (1 - alpha) * short
