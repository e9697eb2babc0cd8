"""Ada-R1's merge (Luo et al. 2025): a linear interpolation of the long- and short-CoT models."""

from __future__ import annotations

from l2s.merge.methods import Param, finite, register


@register("linear", needs_base=False, n_models=(2, 2), label="Linear merge", order=11,
          aliases=("merge",),  # Luo et al.'s tables call the merged model "Merge"
          paper="Luo et al. 2025, arXiv 2504.21659", url="https://arxiv.org/abs/2504.21659", params={
              "alpha": Param(0.8, "weight of the first (long-CoT) model; Ada-R1's configs use 0.8", "0 <= α <= 1",
                             lambda v: finite(v) and 0 <= v <= 1),
          })
def linear(base, models, alpha):
    """Ada-R1 merge (Luo et al. 2025, arXiv 2504.21659): θ = α θ_L + (1−α) θ_S, models = [θ_L, θ_S]."""
    long, short = models
    return alpha * long + (1 - alpha) * short
