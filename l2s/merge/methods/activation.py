"""Methods driven by calibration statistics: AIM (activations) and Sens-Merging (sensitivities).

The statistics themselves are computed once with transformers by :mod:`l2s.merge.calibration`; the
functions here only turn them into coefficients and apply them to tensors.
"""

from __future__ import annotations

import torch

from l2s.merge.methods import Param, alpha_param, finite, register
from l2s.merge.methods.svd import INCLUDE_BASE


def aim_importance(scale: torch.Tensor) -> torch.Tensor:
    """AIM importance of each input channel: I = |s| / max |s| (all ones if s is all zero)."""
    s = scale.abs().float()
    peak = s.max()
    return torch.ones_like(s) if peak == 0 else s / peak


@register("aim", kind="modifier", elementwise=True, params={
    "omega": Param(0.4, "balance factor ω: the smallest fraction of the merge's change kept on the most "
                        "active input channels (Wu et al. Table 7: 0.4)", "0 <= ω <= 1",
                   lambda v: finite(v) and 0 <= v <= 1),
})
def aim(base, merged, importance, omega):
    """Activation-Informed Merging (Nobari et al. 2025, arXiv 2502.02421), applied to a merge's output.

    s = Σ_batches mean_tokens |x| per input channel of the module in the BASE model (calibration),
    I = |s| / max|s|,  r = 1 − I (1 − ω),  W = W_0 + (W_merged − W_0) ⊙ r along the input channels
    (the last dimension of a linear weight; the only one of a norm weight).
    """
    relax = 1 - importance.to(merged.dtype) * (1 - omega)
    return base + (merged - base) * relax


def sens_task_scaling(layer_sensitivity: torch.Tensor) -> torch.Tensor:
    """Task-specific scaling of one model: α^l = S^l / ‖S‖_2 over its layers l."""
    norm = layer_sensitivity.norm(p=2)
    if norm == 0:
        return torch.full_like(layer_sensitivity, 1 / layer_sensitivity.numel())
    return layer_sensitivity / norm


def sens_cross_task_scaling(alignment: torch.Tensor) -> torch.Tensor:
    """Cross-task scaling τ_i = Σ_{j≠i} g_ij / Σ_{i,j} g_ij from the logit distances g_ij (diagonal ignored)."""
    g = alignment.clone().fill_diagonal_(0)
    total = g.sum()
    if total == 0:
        return torch.full((g.shape[0],), 1 / g.shape[0])
    return g.sum(dim=1) / total


def sens_coefficients(task_scaling: torch.Tensor, tau: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-layer merging coefficients σ_i^l = softmax_i(α_i^l τ_i / T), shape [models, layers]."""
    return torch.softmax(task_scaling * tau[:, None] / temperature, dim=0)


@register("sens", elementwise=True, params={
    "alpha": alpha_param(0.7, "task-arithmetic scale (Wu et al. Table 7: 0.4 / 0.7 / 0.8 for 1.5B / 7B / 14B)"),
    "T": Param(2.0, "softmax temperature (Wu et al. Table 7: 3 / 2 / 6 for 1.5B / 7B / 14B)", "T > 0",
               lambda v: finite(v) and v > 0),
    "include_base": INCLUDE_BASE,
})
def sens(base, models, alpha, coefficients):
    """Sens-Merging (Liu et al. 2025, arXiv 2502.12420) plugged into task arithmetic, on one tensor.

    θ^l = θ_0^l + α Σ_i K σ_i^l δ_i^l, with ``coefficients`` = [K σ_i^l for each model] for this
    tensor's layer l and K the number of merged models (so the coefficients average to one).
    σ comes from :func:`sens_coefficients`:
      - sensitivity S_i^l = mean over model i's calibration texts of Σ_{θ ∈ layer l} |θ ⊙ ∇_θ L|
        (first-order loss change when the parameter is zeroed), L the LM loss of model i;
      - task-specific scaling α_i^l = S_i^l / ‖S_i‖_2 (normalised within the model);
      - cross-task scaling τ_i from g_ij = mean over model j's texts of the per-token L2 distance
        between the logits of models i and j, τ_i = Σ_j g_ij / Σ_ij g_ij;
      - σ_i^l = softmax over models of α_i^l τ_i / T.
    Choices where the paper's text was not available to us: the L2 normalisation of α, the L1
    normalisation of τ, the factor K, and — for long-to-short merging, which has one fine-tune —
    counting the base as a merged model (``include_base``, its δ is zero but it takes part in the
    softmax; Wu et al. calibrate it on long answers and the fine-tune on short ones).
    """
    out = base.clone()
    for c, m in zip(coefficients, models):
        out += (alpha * c) * (m - base)
    return out
