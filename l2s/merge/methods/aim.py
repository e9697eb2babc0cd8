"""Activation-Informed Merging (Nobari et al. 2025, arXiv 2502.02421): relax a merge towards its base.

A ``post`` modifier on any merge with a base (Wu et al. use ``aim+ties``, "AIM-TIES"). The reference
is the authors' code (github.com/ahnobari/ActivationInformedMerging, ``MergeModels/ActivationMerging/
_utils.py``: ``get_calib_dataset``, ``get_calib_feat``, ``relax_on_merged``), which l2s follows:

- **Statistics** of the BASE model: for every module with a weight except the embeddings (linear
  layers, norms, lm_head), s = Σ_blocks mean_tokens |x| per input channel.
- **Calibration framing** (``framing``): ``blocks`` (default, the reference's): texts longer than a
  block are skipped, the others are tokenized, concatenated and cut into blocks of ``block_tokens``
  tokens (512; the last, partial block is dropped), one forward pass per block. The block is capped
  at the model's ``max_position_embeddings`` (the toy models have 256), and when the kept texts hold
  less than one block they form a single shorter block; both are recorded. ``texts``: one forward
  pass per text, cut to ``calibration_max_tokens``. The reference samples 256 texts of
  pile-val-backup; Wu et al. (and l2s) use 100 calibration texts of s1K. Which framing, block size,
  number of blocks and skipped texts is recorded in the statistics file and in ``l2s_merge.json``
  (``aim``).
- **Relaxation**: I = |s| / max|s|, r = 1 − I (1 − ω), W = W_0 + (W_merged − W_0) ⊙ r along the
  input channels (the last dimension of a linear weight, the only one of a norm weight).
- **Tied embeddings**: the reference leaves the embedding modules as merged and relaxes lm_head;
  with tied weights its lm_head IS the embedding matrix, so the shared matrix is relaxed through
  lm_head's statistics. l2s does the same: a tied output's ``model.embed_tokens.weight`` gets
  lm_head's relaxation; an untied output (e.g. a tied Qwen2.5-Math-1.5B merged with an untied R1
  distill, :func:`l2s.merge.executor.tie_embeddings`) has its own ``lm_head.weight``, which is
  relaxed, and keeps its merged embeddings, as the reference does with an untied merged model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from l2s.merge.methods import Needs, Param, Variant, choice_param, finite, register


def aim_importance(scale: torch.Tensor) -> torch.Tensor:
    """AIM importance of each input channel: I = |s| / max |s| (all ones if s is all zero)."""
    s = scale.abs().float()
    peak = s.max()
    return torch.ones_like(s) if peak == 0 else s / peak


@dataclass
class AimState:
    importance: dict[str, torch.Tensor]
    calibration: dict  # framing, block size, blocks, skipped texts (the statistics file's metadata)


def prepare(merger) -> AimState:
    from l2s.merge import calibration
    from l2s.merge.checkpoint import TIED_EMBEDDINGS
    from l2s.provenance import config_hash, file_sha256

    cfg, p = merger.cfg, merger.params
    scales, path = calibration.aim_stats(cfg.out, merger.base.path, config_hash(merger.records[cfg.base]),
                                         cfg.calibration[0], cfg.calibration_samples, cfg.calibration_max_tokens,
                                         file_sha256, framing=p["framing"], block_tokens=p["block_tokens"])
    importance = {k: aim_importance(v) for k, v in scales.items() if k in merger.plans}
    head, embed = TIED_EMBEDDINGS
    if head in scales and head not in merger.plans and embed in merger.plans:  # a tied output
        importance[embed] = aim_importance(scales[head])
    merger.add_stats("aim", path)
    meta = calibration.aim_metadata(path)
    info = {"framing": p["framing"], **meta.get("framing", {}),
            "relaxed_through_lm_head": [embed] if embed in importance and embed not in scales else []}
    return AimState(importance, info)


def relax(merger, state: AimState, name: str, base: torch.Tensor, merged: torch.Tensor) -> torch.Tensor:
    imp = state.importance.get(name)
    if imp is None:
        return merged
    if imp.shape[-1] != merged.shape[-1]:
        raise ValueError(f"AIM statistics of {name!r} have {imp.shape[-1]} channels, the tensor {merged.shape[-1]}")
    return aim(base, merged, imp, merger.params["omega"])


def record(state: AimState) -> dict:
    return {"aim": state.calibration}


@register("aim", kind="post", paper="Nobari et al. 2025, arXiv 2502.02421", url="https://arxiv.org/abs/2502.02421",
          needs=Needs(calibration="base"), prepare=prepare, relax=relax, record=record, record_keys=("aim",),
          variants=(Variant("aim", "aim+ties", "AIM-TIES", 9, ("aim_ties", "aim-ties")),), params={
              "omega": Param(0.4, "balance factor ω: the smallest fraction of the merge's change kept on the most "
                                  "active input channels (Wu et al. Table 7: 0.4)", "0 <= ω <= 1",
                             lambda v: finite(v) and 0 <= v <= 1),
              "framing": choice_param("blocks", ("blocks", "texts"),
                                      "calibration framing: texts concatenated and cut into blocks (the "
                                      "reference's), or one forward pass per text"),
              "block_tokens": Param(512, "tokens per calibration block (reference: 512), capped at the base's "
                                         "max_position_embeddings", "integer >= 2",
                                    lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2, int),
          })
def aim(base, merged, importance, omega):
    """Activation-Informed Merging (Nobari et al. 2025, arXiv 2502.02421), applied to a merge's output.

    s = Σ_blocks mean_tokens |x| per input channel of the module in the BASE model (calibration),
    I = |s| / max|s|,  r = 1 − I (1 − ω),  W = W_0 + (W_merged − W_0) ⊙ r along the input channels
    (the last dimension of a linear weight; the only one of a norm weight).
    """
    relax = 1 - importance.to(merged.dtype) * (1 - omega)
    return base + (merged - base) * relax
