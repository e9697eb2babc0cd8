"""Ada-R1's second stage: DPO (or SFT) of the merged model on ``l2s pairs`` data, with TRL.

``TrainConfig`` and ``PRESETS`` (the papers' settings and a CPU toy preset); ``train`` writes an HF checkpoint.
"""

from l2s.dpo.config import PRESETS, TrainConfig, preset_config

__all__ = ["PRESETS", "TrainConfig", "preset_config", "train"]


def train(*args, **kwargs):
    """See :func:`l2s.dpo.train.train` (imported lazily: it pulls in torch and TRL)."""
    from l2s.dpo.train import train as _train

    return _train(*args, **kwargs)
