"""Task arithmetic (Ilharco et al. 2023): the base plus the scaled sum of the task vectors."""

from __future__ import annotations

from l2s.merge.methods import alpha_param, register


@register("task_arithmetic",
          params={"alpha": alpha_param(0.7, "scale of the summed task vectors (Wu et al. Table 7: 0.7)")},
          label="TA", order=2, aliases=("ta", "task-arithmetic"),
          paper="Ilharco et al. 2023, arXiv 2212.04089", url="https://arxiv.org/abs/2212.04089")
def task_arithmetic(base, models, alpha):
    """Task arithmetic (Ilharco et al. 2023): θ = θ_0 + α Σ_i δ_i. Wu et al. Table 7: α = 0.7."""
    total = models[0] - base
    for m in models[1:]:
        total += m - base
    return total.mul_(alpha).add_(base)
