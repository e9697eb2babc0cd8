"""``TrainConfig``: DPO (or SFT) fine-tuning of a merged model on ``l2s pairs`` data, with the papers' presets.

DPO loss (Rafailov et al. 2023), y_w chosen, y_l rejected, π_ref the frozen starting model:
    L = -log σ(β [log π(y_w|x)/π_ref(y_w|x) - log π(y_l|x)/π_ref(y_l|x)])  +  α · NLL(y_w | x)
The second term (RPO, Pang et al. 2024, "Iterative Reasoning Preference Optimization") is TRL's
``loss_type=["sigmoid", "sft"]`` with weights ``[1, α]``; ``rpo_alpha`` sets α (None = plain DPO).
NLL is the mean per-token negative log-likelihood of the chosen responses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

METHODS = ("auto", "dpo", "sft")


@dataclass
class TrainConfig:
    """Preference (or SFT) training. ``effective_batch_size`` = per-device batch x accumulation x GPUs;
    the accumulation steps are derived from it at launch (an error when it does not divide)."""

    preset: str = "custom"
    method: str = "auto"  # auto: "sft" for prompt/completion data (the ``sft`` variant), else "dpo"
    beta: float = 0.1
    loss_type: str = "sigmoid"
    rpo_alpha: float | None = None
    learning_rate: float = 5e-7
    num_train_epochs: float = 2.0
    max_steps: int = -1  # > 0 overrides the epochs
    effective_batch_size: int = 32
    per_device_train_batch_size: int = 1
    max_length: int | None = 4096
    lr_scheduler_type: str = "cosine"
    warmup: float = 0.1  # fraction of the steps if < 1, else a number of steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    bf16: bool = False
    gradient_checkpointing: bool = False
    precompute_ref_log_probs: bool = False
    deepspeed: str | None = None  # path of a DeepSpeed JSON config, e.g. configs/deepspeed/zero3.json
    logging_steps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("beta", "learning_rate", "num_train_epochs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("effective_batch_size", "per_device_train_batch_size", "lora_r", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.effective_batch_size % self.per_device_train_batch_size:
            raise ValueError(f"effective_batch_size {self.effective_batch_size} is not a multiple of "
                             f"per_device_train_batch_size {self.per_device_train_batch_size}")
        if self.rpo_alpha is not None and self.rpo_alpha < 0:
            raise ValueError(f"rpo_alpha must be >= 0 or null, got {self.rpo_alpha!r}")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"max_length must be >= 8 or null, got {self.max_length!r}")

    def gradient_accumulation_steps(self, world_size: int = 1) -> int:
        per_step = self.per_device_train_batch_size * world_size
        if self.effective_batch_size % per_step:
            raise ValueError(f"effective_batch_size {self.effective_batch_size} is not a multiple of "
                             f"per-device batch {self.per_device_train_batch_size} x {world_size} processes")
        return self.effective_batch_size // per_step

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The papers' settings. Ada-R1 (Luo et al. 2025, Sec. 4.1): full fine-tuning, β 0.1 (7B) / 0.05 (1.5B),
# lr 5e-7, batch 32, 2 epochs (the authors' LLaMA-Factory YAMLs: 3 epochs, cosine, warmup 0.1, bf16,
# ZeRO-3), max length 4096. Wu et al. 2025 (Sec. 4): DPO on R1-7B with the short answer chosen, LoRA
# rank 16, lr 5e-5, 3 epochs, max length 4096 (β and batch are not stated: TRL's β and Ada-R1's batch).
_REAL = dict(learning_rate=5e-7, num_train_epochs=2.0, effective_batch_size=32, per_device_train_batch_size=1,
             max_length=4096, lr_scheduler_type="cosine", warmup=0.1, bf16=True, gradient_checkpointing=True)
PRESETS: dict[str, dict[str, Any]] = {
    "adar1-7b": {**_REAL, "beta": 0.1},
    "adar1-1.5b": {**_REAL, "beta": 0.05},
    "wu-dpo": {**_REAL, "beta": 0.1, "learning_rate": 5e-5, "num_train_epochs": 3.0, "lora": True, "lora_r": 16,
               "lora_alpha": 32},
    # CPU toy world (tiny Qwen2, ~100-token responses). Plain DPO at lr 5e-5 barely moves such a model
    # in a few hundred steps and at 5e-4 it shortens answers by unlearning them; the NLL term on the
    # chosen responses (rpo_alpha) keeps them likely while the DPO term moves mass off the rejected ones.
    # Measured on toy-s (α 0.8 merge, K 12, 500 train problems, 2000 bi-level pairs, 252 steps, ~50 s;
    # test split, vs the long model): this preset 99.1% acc (-0.9 pt), -27.7% tokens, long-CoT ratio
    # 0/0/0/100/100% by level; plain DPO (rpo_alpha None) 63.5% / -35.9%; plain DPO at 5e-4 48.9% /
    # -35.6%; this preset at lr 5e-5 78.3% / -20.7% (under-trained: mixed styles at levels 1-3).
    "toy": dict(beta=0.1, rpo_alpha=1.0, learning_rate=1e-4, num_train_epochs=2.0, effective_batch_size=16,
                per_device_train_batch_size=16, max_length=512, lr_scheduler_type="cosine", warmup=0.1,
                bf16=False, gradient_checkpointing=False, logging_steps=5),
}


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """A preset, with options replaced by ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], "preset": name, **overrides})
