"""Sens-Merging (Liu et al. 2025, arXiv 2502.12420): layer-wise coefficients from sensitivities.

The statistics (layer sensitivities of each participant, logit distances between participants) are
computed once with transformers by :mod:`l2s.merge.calibration`; :func:`prepare` turns them into
per-layer coefficients and :func:`sens` applies them to each tensor, plugged into task arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from l2s.merge.methods import Needs, Param, alpha_param, finite, register
from l2s.merge.methods.svd import INCLUDE_BASE


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


@dataclass
class SensState:
    layers: dict[str, list[float]]  # layer -> [K σ_i^l for each participant]
    summary: dict


def tied_sensitivities(merger, row: dict[str, float], name: str) -> dict[str, float]:
    """Layer sensitivities of a participant, with an ``lm_head`` entry when its lm_head.weight is read
    from its embeddings: transformers lists a tied weight once, under model.embed_tokens, with the
    gradient of both of its uses, so that sensitivity is its lm_head's too."""
    from l2s.merge.checkpoint import TIED_EMBEDDINGS

    head, embed = (n.rsplit(".", 1)[0] for n in TIED_EMBEDDINGS)
    if name in merger.tied["lm_head_from_embed_tokens"] and head not in row and embed in row:
        return {**row, head: row[embed]}
    return row


def prepare(merger) -> SensState:
    from l2s.merge import calibration
    from l2s.provenance import config_hash, file_sha256

    cfg = merger.cfg
    names = merger.participant_names()
    stats, path = calibration.sens_stats(cfg.out, [merger.paths[n] for n in names],
                                         [config_hash(merger.records[n]) for n in names], cfg.calibration,
                                         cfg.calibration_samples, cfg.calibration_max_tokens, file_sha256)
    rows = [tied_sensitivities(merger, row, n) for row, n in zip(stats["layer_sensitivity"], names)]
    layers = sorted(rows[0])
    s = torch.tensor([[row.get(layer, 0.0) for layer in layers] for row in rows], dtype=torch.float64)
    alpha = torch.stack([sens_task_scaling(r) for r in s])
    tau = sens_cross_task_scaling(torch.tensor(stats["logit_distance"], dtype=torch.float64))
    sigma = sens_coefficients(alpha, tau, merger.params["T"]) * len(names)
    merger.add_stats("sens", path)
    summary = {"layers": layers, "task_scaling": alpha.tolist(), "tau": tau.tolist(),
               "coefficients": sigma.tolist(), "participants": names}
    return SensState({layer: sigma[:, j].tolist() for j, layer in enumerate(layers)}, summary)


def tensor_args(merger, state: SensState, name: str) -> dict:
    from l2s.merge.calibration import layer_of

    layer = layer_of(name)
    if layer not in state.layers:
        raise ValueError(f"tensor {name!r}: no Sens-Merging sensitivity for its layer {layer!r}")
    return {"coefficients": state.layers[layer]}


def record(state: SensState) -> dict:
    return {"sens": state.summary}


@register("sens", label="Sens-Merging", order=10, aliases=("sens_merging", "sens-merging"),
          paper="Liu et al. 2025, arXiv 2502.12420", url="https://arxiv.org/abs/2502.12420",
          needs=Needs(calibration="participants", base_participant="include_base"),
          prepare=prepare, tensor_args=tensor_args, record=record, record_keys=("sens",), params={
              "alpha": alpha_param(0.7, "task-arithmetic scale "
                                        "(Wu et al. Table 7: 0.4 / 0.7 / 0.8 for 1.5B / 7B / 14B)"),
              "T": Param(2.0, "softmax temperature (Wu et al. Table 7: 3 / 2 / 6 for 1.5B / 7B / 14B)", "T > 0",
                         lambda v: finite(v) and v > 0),
              "include_base": INCLUDE_BASE,
          })
def sens(base, models, alpha, coefficients):
    """Sens-Merging (Liu et al. 2025, arXiv 2502.12420) plugged into task arithmetic, on one tensor.

    θ^l = θ_0^l + α Σ_i K σ_i^l δ_i^l, with ``coefficients`` = [K σ_i^l for each participant] for this
    tensor's layer l, K the number of participants (so the coefficients average to one), and
    ``models`` the participants (the executor puts θ_0 first when ``include_base``: its δ is zero).
    σ comes from :func:`sens_coefficients`:
      - sensitivity S_i^l = mean over participant i's calibration texts of Σ_{θ ∈ layer l} |θ ⊙ ∇_θ L|
        (first-order loss change when the parameter is zeroed), L the LM loss of model i;
      - task-specific scaling α_i^l = S_i^l / ‖S_i‖_2 (normalised within the model);
      - cross-task scaling τ_i from g_ij = mean over model j's texts of the per-token L2 distance
        between the logits of models i and j, τ_i = Σ_j g_ij / Σ_ij g_ij;
      - σ_i^l = softmax over participants of α_i^l τ_i / T.

    What the paper's abstract and overview (Fig. 2) state, and l2s follows: layer-wise sensitivity
    within each model, cross-task scaling from logit alignment, coefficients plugged into a
    task-vector merge. **Choices that cannot be checked against the paper**, because its method
    section was not available to us (only its abstract and overview) and neither the authors nor
    Wu et al. 2025 released Sens-Merging code (Wu et al.'s repository has the task-vector methods
    only): the L2 normalisation of α, the L1 normalisation of τ, the use of the softmax's T as a
    divisor of α τ, the factor K, the direction of g (model j's texts), and — for long-to-short
    merging, which has one fine-tune — counting the base as a participant (``include_base``; Wu et
    al. calibrate it on long answers and the fine-tune on short ones).
    """
    out = base.clone()
    for c, m in zip(coefficients, models):
        out += (alpha * c) * (m - base)
    return out
