"""LoRE-Merging (Liu et al. 2025, arXiv 2502.10749): a shared base and low-rank task vectors, estimated.

The paper (its Eq. 1 and Algorithm 1) estimates, without the true base, an approximate base θ_0' and
low-rank task vectors δ_i of the models θ_i:

    min_{θ_0', δ_i}  Σ_i ‖θ_0' + δ_i − θ_i‖²_F + μ ‖δ_i‖_*

by coordinate descent: δ_i = SVT_μ(θ_i − θ_0') (singular value thresholding at μ), then
θ_0' = (1/n) Σ_i (θ_i − δ_i); the estimated task vectors are then merged by an existing merging method.

**μ is the paper's μ: the threshold of its SVT update** (Algorithm 1). That update is the exact
minimiser of ½‖δ − R‖² + μ‖δ‖_*; under Eq. 1 as printed (no ½) the exact minimiser would threshold
at μ/2. l2s follows the algorithm's update.

Where l2s departs from the paper, and why:

- **The merge step is task arithmetic with a coefficient**: θ = θ_0' + α Σ_i δ_i.
- **Long-to-short has one fine-tune**, so the base θ_0 (System 1) is counted as a participant
  (``include_base``, default) beside it: with a single model the estimate is degenerate (δ → 0, θ_0'
  → θ_1).
- **The estimate starts from the true base** (``init=base``, default) where the paper, having no
  base, starts from the mean of the models (``init=mean``). With two participants the objective's
  minimisers are not unique (any split of θ_1 − θ_0 into δ_0 − δ_1 along the same singular vectors
  costs the same), and the mean start is symmetric: it ends at θ_0' = (θ_0 + θ_1)/2 with δ_0 = −δ_1,
  so that base + one fine-tune gives **exactly the average merge, whatever μ and α** — which is not
  what Wu et al. 2025 report for LoRE. Started from the base, the descent converges to δ_0 = 0,
  δ_1 = SVT_2μ(θ_1 − θ_0), θ_0' = θ_0 + ½(Δ − δ_1) with Δ = θ_1 − θ_0: the merge is
  θ_0 + ½(Δ − δ_1) + α δ_1, the average plus (α − ½) times the low-rank part of the task vector
  (it equals the average only at α = ½ or when μ removes every singular value of Δ/2).
- **Tensors that are not matrices** (biases, norm weights) go through the same algorithm as one-row
  matrices (:func:`.svd.as_matrix`: their nuclear norm is their L2 norm), rather than being left out.
"""

from __future__ import annotations

from l2s.merge.methods import REQUIRED, Needs, Param, alpha_param, choice_param, finite, register, svd
from l2s.merge.methods.svd import INCLUDE_BASE


@register("lore", n_models=(1, None), min_participants=2, label="LoRE", order=7, aliases=("lore_merging",),
          paper="Liu et al. 2025, arXiv 2502.10749", url="https://arxiv.org/abs/2502.10749",
          needs=Needs(base_participant="include_base", svd=True), params={
              "mu": Param(REQUIRED, "the paper's μ: the singular-value threshold of the SVT update (Algorithm 1)",
                          "μ >= 0", lambda v: finite(v) and v >= 0),
              "iters": Param(10, "coordinate-descent iterations", "integer >= 1",
                             lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, int),
              "alpha": alpha_param(1.0, "coefficient of the merged low-rank task vectors"),
              "init": choice_param("base", ("base", "mean"), "start of the estimated base: the true base "
                                   "θ_0, or the paper's mean of the merged models (which, for base + one "
                                   "fine-tune, is the average merge)"),
              "include_base": INCLUDE_BASE,
          })
def lore(base, models, mu, iters=10, alpha=1.0, init="base"):
    """LoRE-Merging (Liu et al. 2025) on one tensor: θ = θ_0' + α Σ_i δ_i (see the module docstring).

    ``models`` are all the participants (the executor puts θ_0 first when ``include_base``);
    θ_0' starts at ``base`` (``init="base"``) or at the mean of ``models`` (``"mean"``, the paper's),
    then ``iters`` rounds of δ_i = SVT_μ(θ_i − θ_0'), θ_0' = (1/n) Σ_i (θ_i − δ_i).
    """
    shape, n = base.shape, len(models)
    mats = [svd.as_matrix(m) for m in models]
    theta0 = svd.as_matrix(base).clone() if init == "base" else sum(mats) / n
    for _ in range(iters):
        deltas = [svd.svt(m - theta0, mu) for m in mats]
        theta0 = sum(m - d for m, d in zip(mats, deltas)) / n
    return (theta0 + alpha * sum(deltas)).reshape(shape)
