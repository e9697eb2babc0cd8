"""SVD methods: LoRE-Merging and the SVD part of Twin-Merging. Exact SVDs (``torch.linalg.svd``)."""

from __future__ import annotations

import torch

from l2s.merge.methods import REQUIRED, Param, alpha_param, finite, register

INCLUDE_BASE = Param(True, "count the base θ_0 as one of the merged models (needed to merge a single "
                           "fine-tune with its base, as in long-to-short merging)", "true or false",
                     lambda v: isinstance(v, bool), bool)


def svt(x: torch.Tensor, tau: float) -> torch.Tensor:
    """Singular value thresholding: U · max(Σ − τ, 0) · Vᵀ, the proximal map of τ‖·‖_*."""
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    return (u * (s - tau).clamp_min(0)) @ vh


def truncate_rank(x: torch.Tensor, r: int) -> torch.Tensor:
    """Best rank-r approximation U_r Σ_r V_rᵀ of a matrix (Eckart–Young); vectors are returned whole."""
    if x.ndim != 2:
        return x
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    return (u[:, :r] * s[:r]) @ vh[:r]


@register("lore", n_models=(1, None), params={
    "mu": Param(REQUIRED, "singular-value threshold μ of the nuclear-norm penalty", "μ >= 0",
                lambda v: finite(v) and v >= 0),
    "iters": Param(10, "coordinate-descent iterations", "integer >= 1",
                   lambda v: isinstance(v, int) and v >= 1, int),
    "alpha": alpha_param(1.0, "scale of the merged low-rank task vectors"),
    "include_base": INCLUDE_BASE,
})
def lore(base, models, mu, iters, alpha):
    """LoRE-Merging (Liu et al. 2025, arXiv 2502.10749) on one tensor.

    Estimates an approximate base θ_0' and low-rank task vectors δ_i without using the true base:
        min_{θ_0', δ_i} Σ_i ½‖θ_0' + δ_i − θ_i‖²_F + μ‖δ_i‖_*
    by coordinate descent from θ_0' = (1/n) Σ_i θ_i: δ_i = SVT_μ(θ_i − θ_0'), then θ_0' = (1/n) Σ_i (θ_i − δ_i)
    (the paper's objective without the ½, so μ here is the singular-value threshold itself).
    The low-rank vectors are then merged by task arithmetic: θ = θ_0' + α Σ_i δ_i.
    ``models`` are all the merged models (the executor puts θ_0 first when ``include_base``). Tensors
    that are not matrices (biases, norms) fall back to plain task arithmetic over the true base:
    θ = θ_0 + α Σ_i (θ_i − θ_0).
    """
    if base.ndim != 2:
        return base + alpha * sum(m - base for m in models)
    theta0 = sum(models) / len(models)
    for _ in range(iters):
        deltas = [svt(m - theta0, mu) for m in models]
        theta0 = sum(m - d for m, d in zip(models, deltas)) / len(models)
    return theta0 + alpha * sum(deltas)


@register("twin", params={
    "r": Param(REQUIRED, "rank kept of each model's exclusive knowledge", "integer >= 1",
               lambda v: isinstance(v, int) and v >= 1, int),
    "alpha": alpha_param(0.7, "task-arithmetic scale of the shared model"),
})
def twin(base, models, r, alpha):
    """Twin-Merging without its router (Lu et al. 2024, arXiv 2406.15479).

    Shared expert θ* = θ_0 + α Σ_i δ_i (task arithmetic); exclusive knowledge of each model
    v_i = θ_i − θ*, compressed to its rank-r SVD truncation; with the router's weights replaced by
    the uniform 1/n:  θ = θ* + (1/n) Σ_i SVD_r(θ_i − θ*). Vectors (biases, norms) are rank one, so
    their truncation is the vector itself.
    """
    shared = base + alpha * sum(m - base for m in models)
    return shared + sum(truncate_rank(m - shared, r) for m in models) / len(models)
