"""Ada-R1's second stage: DPO (or SFT) of the merged model on ``l2s pairs`` data, with TRL.

``TrainConfig`` holds ``trl.DPOConfig`` keyword arguments plus l2s's few options, ``PRESETS`` the papers'
settings and a CPU toy preset (:mod:`l2s.dpo.config`); ``train`` writes an HF checkpoint, training in
float32 with bf16 autocast, checkpointing every ``save_steps`` and resuming a killed run
(:mod:`l2s.dpo.train`).

One process (CPU or one GPU)::

    l2s dpo --model M --pairs P --preset toy --out O

Several GPUs with DeepSpeed ZeRO-3 (float32 master weights, bf16 compute; the "auto" values of the
DeepSpeed config are filled in from the preset by transformers)::

    accelerate launch --config_file configs/accelerate/multi-gpu.yaml --num_processes 8 -m l2s dpo \\
        --model M --pairs P --preset adar1-7b --deepspeed configs/deepspeed/zero3.json --out O

``--num_processes`` x ``per_device_train_batch_size`` must divide ``effective_batch_size`` (32 for the
Ada-R1 presets: 1, 2, 4, 8, 16 or 32 GPUs). Do not pass ``--mixed_precision`` to accelerate: the preset's
``bf16`` decides. Without ``--deepspeed`` the same command runs plain data parallelism (each GPU holds
the whole model, its float32 copy and AdamW's state: ~16 bytes per parameter, so for 1.5B, not 7B). On
a CPU-only machine the same config starts gloo processes (what the tests run)::

    accelerate launch --config_file configs/accelerate/multi-gpu.yaml --num_processes 2 -m l2s dpo \\
        --model M --pairs P --preset toy --out O

(``accelerate launch --cpu --num_processes 2`` starts one process, not two: accelerate 1.15 launches
several CPU processes only through mpirun.)

Rerunning any of these commands after a crash or a kill resumes from the last checkpoint.
"""

from l2s.dpo.config import PRESETS, TrainConfig, preset_config

__all__ = ["PRESETS", "TrainConfig", "preset_config", "train"]


def train(*args, **kwargs):
    """See :func:`l2s.dpo.train.train` (imported lazily: it pulls in torch and TRL)."""
    from l2s.dpo.train import train as _train

    return _train(*args, **kwargs)
