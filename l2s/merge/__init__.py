"""``l2s.merge``: every merging method of the two papers, streamed over safetensors with bounded memory.

    from l2s.merge import MergeConfig, merge
    merge(MergeConfig(method="ties", base="Qwen/Qwen2.5-Math-7B",
                      models=["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"],
                      params={"k": 0.8, "alpha": 1.0}, out="runs/merged-ties"))

The names below are imported on first use, so that ``l2s --help`` (which imports :mod:`l2s.merge.cli`)
does not import torch.
"""

from importlib import import_module

_EXPORTS = {"METHODS": "l2s.merge.methods", "MergeConfig": "l2s.merge.config", "parse_method": "l2s.merge.config",
            "merge": "l2s.merge.executor",
            "already_merged": "l2s.merge.executor"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'l2s.merge' has no attribute {name!r}")
