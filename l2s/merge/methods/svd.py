"""The SVD helpers of the SVD methods (:mod:`.lore`, :mod:`.twin`). Exact SVDs (``torch.linalg.svd``).

With a CUDA device, each SVD and the low-rank product built from it run there in float32 (LoRE takes
2 SVDs of every matrix per iteration: hours on CPU at 7B), and the result comes back to the
input's device and dtype; without one they run on the CPU exactly as written.
"""

from __future__ import annotations

import torch

from l2s.merge.methods import bool_param

INCLUDE_BASE = bool_param(True, "count the base θ_0 as one of the merged models (needed to merge a single "
                                "fine-tune with its base, as in long-to-short merging)")


def svd_device() -> torch.device | None:
    """Where the SVDs run: the CUDA device when there is one, else None (where the tensor is)."""
    return torch.device("cuda") if torch.cuda.is_available() else None


def to_svd_device(x: torch.Tensor) -> torch.Tensor:
    """``x`` on :func:`svd_device` in float32; ``x`` itself when there is none."""
    device = svd_device()
    return x if device is None else x.to(device, torch.float32)


def svt(x: torch.Tensor, tau: float) -> torch.Tensor:
    """Singular value thresholding: U · max(Σ − τ, 0) · Vᵀ, the proximal map of τ‖·‖_*."""
    u, s, vh = torch.linalg.svd(to_svd_device(x), full_matrices=False)
    return ((u * (s - tau).clamp_min(0)) @ vh).to(x.device, x.dtype)


def truncate_rank(x: torch.Tensor, r: int) -> torch.Tensor:
    """Best rank-r approximation U_r Σ_r V_rᵀ of a matrix (Eckart–Young); vectors are returned whole."""
    if x.ndim != 2:
        return x
    u, s, vh = torch.linalg.svd(to_svd_device(x), full_matrices=False)
    return ((u[:, :r] * s[:r]) @ vh[:r]).to(x.device, x.dtype)


def as_matrix(x: torch.Tensor) -> torch.Tensor:
    """A tensor as the matrix the nuclear norm is taken of: a matrix itself, a vector (bias, norm
    weight) as one row — its nuclear norm is its L2 norm and SVT shrinks that norm —, a higher-rank
    tensor as its first dimension by the rest."""
    if x.ndim == 2:
        return x
    return x.reshape(1, -1) if x.ndim < 2 else x.reshape(x.shape[0], -1)
