"""Average merging (model soup, Wortsman et al. 2022): the mean of the models, the base unused."""

from __future__ import annotations

from l2s.merge.methods import register


@register("average", needs_base=False, label="Average", order=1, aliases=("average_merging", "avg", "model_soup"),
          paper="Wortsman et al. 2022, arXiv 2203.05482", url="https://arxiv.org/abs/2203.05482")
def average(base, models):
    """Model soup (Wortsman et al. 2022): θ = (1/n) Σ_i θ_i. The base is not used."""
    out = models[0].clone()
    for m in models[1:]:
        out += m
    return out.div_(len(models))
