"""``l2s.merge``: every merging method of the two papers, streamed over safetensors with bounded memory.

    from l2s.merge import MergeConfig, merge
    merge(MergeConfig(method="ties", base="Qwen/Qwen2.5-Math-7B",
                      models=["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"],
                      params={"k": 0.8, "alpha": 1.0}, out="runs/merged-ties"))
"""

from l2s.merge.config import MergeConfig, parse_method
from l2s.merge.executor import merge
from l2s.merge.methods import METHODS

__all__ = ["METHODS", "MergeConfig", "merge", "parse_method"]
