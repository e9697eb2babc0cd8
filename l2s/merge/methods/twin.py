"""Twin-Merging without its router (Lu et al. 2024, arXiv 2406.15479), as Wu et al. 2025 use it.

Wu et al. "eliminate the router training and directly utilize its SVD merging part". The defaults are
those of the authors' generative (LLM) setting, github.com/LZY-the-boys/Twin-Merging:
``generative/config/twin_merge.yml`` builds the shared expert by task arithmetic with scaling 0.3
(``second_merge_method: task_arithmetic``, ``scaling: 0.3``), and ``generative/eval_twin.py`` keeps
rank ``new_rank = 8`` of each exclusive vector (``sparsify.svd``, which returns vectors whole). Wu et
al. give no Twin hyper-parameters (their Table 7 has none).
"""

from __future__ import annotations

from l2s.merge.methods import Needs, Param, alpha_param, register, svd


@register("twin", label="Twin", order=8, aliases=("twin_merging",), needs=Needs(svd=True),
          paper="Lu et al. 2024, arXiv 2406.15479", url="https://arxiv.org/abs/2406.15479", params={
              "r": Param(8, "rank kept of each model's exclusive knowledge (authors' code: new_rank = 8)",
                         "integer >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, int),
              "alpha": alpha_param(0.3, "task-arithmetic scale of the shared model (authors' config: 0.3)"),
          })
def twin(base, models, r, alpha):
    """Twin-Merging without its router (Lu et al. 2024, arXiv 2406.15479).

    Shared expert θ* = θ_0 + α Σ_i δ_i (task arithmetic); exclusive knowledge of each model
    v_i = θ_i − θ*, compressed to its rank-r SVD truncation; with the router's weights replaced by
    the uniform 1/n:  θ = θ* + (1/n) Σ_i SVD_r(θ_i − θ*). Vectors (biases, norms) are kept whole
    (the authors' ``sparsify.svd`` returns 1-D tensors as they are). With one model (long-to-short)
    the authors' code adds the one exclusive vector, which is the same.
    """
    shared = base + alpha * sum(m - base for m in models)
    return shared + sum(svd.truncate_rank(m - shared, r) for m in models) / len(models)
