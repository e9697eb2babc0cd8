"""TIES-Merging (Yadav et al. 2023): trim, elect sign, disjoint mean — and its whole-model TRIM pass.

Trimming selects the k-th smallest magnitude (:func:`kth_smallest`: a sampled bracket, then
``kthvalue`` on the few entries inside it) rather than sorting: on CPU a full argsort of a large
weight matrix is several times slower, and so is a plain ``kthvalue`` of all entries (~20 ns per
entry here, against ~4 for the bracket).
The functions allocate as few tensor-sized temporaries as the formula allows (in-place updates of
their own intermediates); the results are those of the formulas, bit for bit.

The executor merges a tensor block of rows by block; TRIM's threshold is a property of the whole
task vector, so :func:`tensor_args` assembles |δ_i| of the tensor (one reused buffer the size of the
largest tensor) and passes its k-th smallest entry, and with ``trim=global`` :func:`prepare` finds
the whole-model thresholds in two streamed passes (:func:`global_thresholds`).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from l2s.merge.methods import Needs, Param, alpha_param, choice_param, finite, register

SELECT_DIRECT = 1 << 16  # up to this many entries, kthvalue of all of them
SELECT_BLOCK = 1 << 20  # entries per block when counting and gathering inside the bracket


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


# -- the executor's hooks ------------------------------------------------------------------------------
@dataclass
class TiesState:
    thresholds: list[float | None] | None  # whole-model thresholds (trim=global), else None
    scratch: torch.Tensor  # |δ_i| of the tensor being thresholded, reused


def prepare(merger) -> TiesState:
    p = merger.params
    thresholds = global_thresholds(merger, p["k"]) if p["trim"] == "global" and p["k"] > 0 else None
    return TiesState(thresholds, torch.empty(0, dtype=merger.compute))


def tensor_args(merger, state: TiesState, name: str) -> dict:
    """The thresholds of tensor ``name``: the whole-model ones, or its own per-tensor ones."""
    return {"thresholds": state.thresholds if state.thresholds is not None else tensor_thresholds(merger, state, name)}


def record(state: TiesState) -> dict:
    return {"global_trim_thresholds": state.thresholds}


def tensor_thresholds(merger, state: TiesState, name: str) -> list[torch.Tensor | None]:
    """Per-tensor TRIM thresholds t_i (the ⌊k·n⌋-th smallest |δ_i| of the tensor), δ_i taken exactly
    as :func:`ties` takes it from the models the executor gives it."""
    k = merger.params["k"]
    n = merger.merged_numel(name)
    if int(k * n) == 0:
        return [None] * len(merger.models)
    if state.scratch.numel() < n:
        state.scratch = torch.empty(n, dtype=merger.compute)
    out = []
    for i in range(len(merger.models)):
        pos = 0
        for _, d in merger.deltas(name, model=i):
            torch.abs(d, out=state.scratch[pos:pos + d.numel()].view(d.shape))
            pos += d.numel()
        out.append(trim_threshold(state.scratch[:n], k))
    return out


def global_thresholds(merger, k: float) -> list[float | None]:
    """Whole-model TRIM thresholds: the ⌊k·N⌋-th smallest |δ_i| over all N entries of task vector i.

    Exact and streamed, in two passes over the tensors: a histogram of the upper 16 bits of the
    float32 bit patterns of |δ| (monotone in the value for non-negative floats) locates the bin
    of the threshold, a histogram of the lower 16 bits inside that bin pins its exact value.
    """
    n = len(merger.models)
    names = merger.float_tensor_names()
    bits = lambda d: d.abs().float().reshape(-1).view(torch.int32)  # noqa: E731
    hist = torch.zeros(n, 65536, dtype=torch.int64)
    counts = [0] * n
    for name in tqdm(names, desc="global TRIM pass 1/2", unit="tensor"):
        for i, d in merger.deltas(name):
            hist[i] += torch.bincount(bits(d) >> 16, minlength=65536)
            counts[i] += d.numel()
    ranks = [int(k * c) for c in counts]
    his, before = [], []
    for i in range(n):
        cum = hist[i].cumsum(0)
        hi = int(torch.searchsorted(cum, ranks[i])) if ranks[i] else 0
        his.append(hi)
        before.append(int(cum[hi - 1]) if hi else 0)
    low = torch.zeros(n, 65536, dtype=torch.int64)
    for name in tqdm(names, desc="global TRIM pass 2/2", unit="tensor"):
        for i, d in merger.deltas(name):
            b = bits(d)
            low[i] += torch.bincount(b[(b >> 16) == his[i]] & 0xFFFF, minlength=65536)
    out: list[float | None] = []
    for i in range(n):
        if ranks[i] == 0:
            out.append(None)
            continue
        lo = int(torch.searchsorted(low[i].cumsum(0), ranks[i] - before[i]))
        out.append(struct.unpack("<f", struct.pack("<I", (his[i] << 16) | lo))[0])
    return out


@register("ties", label="TIES", order=3, aliases=("ties_merging", "ties-merging"),
          paper="Yadav et al. 2023, arXiv 2306.01708", url="https://arxiv.org/abs/2306.01708",
          needs=Needs(global_pass="trim=global"), prepare=prepare, tensor_args=tensor_args, record=record,
          record_keys=("global_trim_thresholds",), params={
              "k": Param(0.8, "TRIM ratio: the fraction of each task vector's smallest-magnitude entries dropped "
                              "(k=0.8 keeps the top 20%; Wu et al. Table 7)", "0 <= k <= 1",
                         lambda v: finite(v) and 0 <= v <= 1),
              "alpha": alpha_param(1.0, "scale of the merged task vector (Wu et al. Table 7: 1.0)"),
              "trim": choice_param("tensor", ("tensor", "global"),
                                   "where the TRIM threshold is taken: per tensor (default) or over the whole "
                                   "flattened task vector, as the original MergeLM code"),
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
