"""``TrainConfig``: the options of one DPO (or SFT) run, and the papers' presets.

DPO loss (Rafailov et al. 2023), y_w chosen, y_l rejected, π_ref the frozen starting model:
    L = -log σ(β [log π(y_w|x)/π_ref(y_w|x) - log π(y_l|x)/π_ref(y_l|x)])  +  α · NLL(y_w | x)
The second term (RPO, Pang et al. 2024, "Iterative Reasoning Preference Optimization") is TRL's
``loss_type=["sigmoid", "sft"]`` with ``loss_weights=[1, α]``; plain DPO is ``loss_type=["sigmoid"]``.
NLL is the mean per-token negative log-likelihood of the chosen responses.

A configuration is one flat mapping (a preset, a ``--config`` YAML/JSON file, keyword arguments):

* every key that names a field of ``trl.DPOConfig`` (which extends ``transformers.TrainingArguments``)
  is passed to it unchanged: ``beta``, ``learning_rate``, ``loss_type``, ``bf16``, ``deepspeed``,
  ``save_steps``, ``resume_from_checkpoint``, ... (``help(trl.DPOConfig)`` lists them);
* the keys of :data:`L2S_OPTIONS` are l2s's own (``effective_batch_size``, ``lora``, ``save_dtype``, ...);
* ``output_dir`` and ``gradient_accumulation_steps`` are set by l2s (the work directory, and
  ``effective_batch_size`` / (per-device batch x processes)); ``gradient_checkpointing`` is refused for
  its current name, ``activation_checkpointing``.

For the ``sft`` variant the ``TrainingArguments`` fields and ``max_length`` go to ``trl.SFTConfig``, the
other DPO options do not (SFT's ``loss_type`` means something else), and ``sft: {...}`` adds SFTConfig's
own options.

There is no copy of TRL's options here: names and types are checked against the annotations of
``trl.DPOConfig``, ``trl.SFTConfig`` and ``peft.LoraConfig`` themselves (:func:`l2s.config.check_fields`:
``beta: "high"`` or ``bf16: "false"`` is an error naming the key and the type), the presets are
``DPOConfig`` keyword arguments, and the ``DPOConfig`` itself is built from them when the run starts
(:meth:`TrainConfig.trainer_args`): building one sets up the processes (``accelerate launch``) and
DeepSpeed's ZeRO-3 loading, and needs the run's work directory, so it cannot be built when the options
are read.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from l2s.config import ConfigError, check_fields, merge, parse

Method = Literal["auto", "dpo", "sft"]
SaveDtype = Literal["float32", "bfloat16", "auto"]
METHODS, SAVE_DTYPES = typing.get_args(Method), typing.get_args(SaveDtype)
L2S_OPTIONS = ("method", "effective_batch_size", "lora", "save_dtype", "sft")
# Options l2s refuses, and why.
REFUSED = {"output_dir": "it is the run's work directory (checkpoints), next to the output",
              "gradient_accumulation_steps": "it is derived from effective_batch_size; set that instead",
              "gradient_checkpointing": "it is transformers' deprecated alias; set activation_checkpointing",
              "gradient_checkpointing_kwargs": "it is transformers' deprecated alias; set "
                                               "activation_checkpointing_kwargs"}
# Options that do not change the training trajectory: a killed run may resume with other values.
RESUME_NEUTRAL = ("logging_steps", "save_steps", "save_total_limit", "resume_from_checkpoint", "save_dtype")
LORA_DEFAULTS: dict[str, Any] = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}

# l2s's choices over TRL's defaults, beneath every preset. TRL turns bf16 and activation checkpointing on
# by default; l2s leaves both to the presets. Checkpoints: every 100 optimizer steps (about 20 min of a 7B
# ZeRO-3 run, 20 s of a toy run), the last two kept, with the optimizer state so that a resumed run
# continues exactly.
DEFAULTS: dict[str, Any] = dict(bf16=False, activation_checkpointing=False, report_to="none", seed=0,
                                save_strategy="steps", save_steps=100, save_total_limit=2, save_only_model=False)


@dataclass
class TrainConfig:
    """One run: ``args`` are ``trl.DPOConfig`` keyword arguments, the other fields are l2s's options.

    method: ``auto`` (``sft`` for prompt/completion data, the ``sft`` variant; else ``dpo``), ``dpo``, ``sft``.
    effective_batch_size: pairs per optimizer step, = per-device batch x gradient accumulation x processes;
        the accumulation steps are derived from it at launch (an error when it does not divide).
    lora: None for full fine-tuning, else ``peft.LoraConfig`` keyword arguments over :data:`LORA_DEFAULTS`
        (``True`` = the defaults); the adapters are merged into the saved weights.
    save_dtype: dtype of the saved weights. ``float32`` (default): the trained weights as they are.
        ``bfloat16``: rounded to bf16 (half the size). ``auto``: the dtype of the input checkpoint. Why
        float32: at the papers' lr 5e-7 AdamW moves a weight by ~5e-7 per step, far below bf16's
        resolution (a bf16 step is 2^-7 to 2^-8 of the weight: 1.2e-4 for a weight of 0.02), so the
        policy trains in float32 (bf16 autocast where ``bf16`` is set) and the updates add up there; only
        a float32 save keeps all of them, while a bf16 save keeps a weight's change only once it exceeds
        half a bf16 step (tests/test_dpo_scale.py, 8 steps on a bf16 stand-in: 87% of the entries changed
        in the float32 save, 2.2% in the bf16 save). A bf16 evaluation rounds the weights the same way.
    sft: ``trl.SFTConfig`` keyword arguments for the ``sft`` variant (e.g. ``{"packing": true}``).
    """

    args: dict[str, Any] = field(default_factory=dict)
    preset: str = "custom"
    method: Method = "auto"
    effective_batch_size: int = 32
    lora: bool | dict[str, Any] | None = None
    save_dtype: SaveDtype = "float32"
    sft: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.args = {**DEFAULTS, **self.args}
        if self.lora is True:
            self.lora = {}
        elif self.lora is False:
            self.lora = None
        if self.lora is not None:
            if not isinstance(self.lora, dict):
                raise ConfigError(f"lora must be null, true or a mapping of peft.LoraConfig options, got {self.lora!r}")
            self.lora = {**LORA_DEFAULTS, **self.lora}
        _check_options(self)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"save_dtype must be one of {SAVE_DTYPES}, got {self.save_dtype!r}")
        for name in ("beta", "learning_rate", "num_train_epochs"):
            if name in self.args and not self.args[name] > 0:
                raise ValueError(f"{name} must be > 0, got {self.args[name]!r}")
        if isinstance(self.effective_batch_size, bool) or not isinstance(self.effective_batch_size, int) \
                or self.effective_batch_size < 1:
            raise ValueError(f"effective_batch_size must be an integer >= 1, got {self.effective_batch_size!r}")
        self.gradient_accumulation_steps(1)

    @property
    def per_device_train_batch_size(self) -> int:
        from trl import DPOConfig

        return self.args.get("per_device_train_batch_size",
                             DPOConfig.__dataclass_fields__["per_device_train_batch_size"].default)

    def gradient_accumulation_steps(self, world_size: int = 1) -> int:
        per_step = self.per_device_train_batch_size * world_size
        if self.effective_batch_size % per_step:
            raise ValueError(f"effective_batch_size {self.effective_batch_size} is not a multiple of "
                             f"per_device_train_batch_size {self.per_device_train_batch_size} x {world_size} "
                             f"process(es); change one of them")
        return self.effective_batch_size // per_step

    def trainer_args(self, method: str, output_dir: str, world_size: int = 1):
        """The ``DPOConfig`` (or ``SFTConfig``) of this run. Building it sets up the processes
        (``accelerate launch``) and, with a DeepSpeed config, ZeRO-3's partitioned model loading, so it
        comes before the model is loaded. Without a GPU, ``use_cpu`` is set (TrainingArguments refuses
        ``bf16`` on a machine without one otherwise; autocast bf16 runs on CPU)."""
        import torch
        from trl import DPOConfig, SFTConfig

        kwargs = dict(self.args)
        if method == "sft":
            from transformers import TrainingArguments

            shared = {f.name for f in dataclasses.fields(TrainingArguments)} | {"max_length"}
            kwargs = {**{k: v for k, v in kwargs.items() if k in shared}, **self.sft}
        if "use_cpu" not in kwargs and not torch.accelerator.is_available():
            kwargs["use_cpu"] = True
        kwargs.update(output_dir=output_dir, gradient_accumulation_steps=self.gradient_accumulation_steps(world_size))
        return (SFTConfig if method == "sft" else DPOConfig)(**kwargs)

    @classmethod
    def from_options(cls, options: dict[str, Any], source: str = "config") -> TrainConfig:
        """A flat mapping of options (see the module docstring) -> ``TrainConfig``. A ``preset`` key names
        the preset beneath the other options (a ``lora`` mapping is merged into the preset's); unknown keys,
        keys l2s sets itself and wrong types are errors that name them, prefixed with ``source``."""
        if not isinstance(options, dict):
            raise ConfigError(f"{source}: expected a mapping of option -> value, got {type(options).__name__}")
        options = dict(options)
        preset = options.pop("preset", None)
        base: dict[str, Any] = {}
        if preset not in (None, "custom"):
            if preset not in PRESETS:
                raise ConfigError(f"{source}: unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
            base = PRESETS[preset]
        options = merge(base, options)
        own = {k: options.pop(k) for k in L2S_OPTIONS if k in options}
        return parse(cls, {"args": options, "preset": preset or "custom", **own}, source)

    def to_dict(self) -> dict[str, Any]:
        """Flat, as written in a config file (``args`` at the top level): ``from_options`` of it gives this
        config back, so ``l2s_train.json``'s ``config`` reruns the run."""
        return {"preset": self.preset, **{k: getattr(self, k) for k in L2S_OPTIONS}, **self.args}

    def resume_key(self) -> dict[str, Any]:
        """The options that decide the trained weights (a checkpoint of other options cannot be resumed)."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUME_NEUTRAL}


# The papers' settings. Ada-R1 (Luo et al. 2025, Sec. 4.1): full fine-tuning, β 0.1 (7B) / 0.05 (1.5B),
# lr 5e-7, batch 32, 2 epochs (the authors' LLaMA-Factory YAMLs: 3 epochs, cosine, warmup 0.1, bf16,
# ZeRO-3), max length 4096. Wu et al. 2025 (Sec. 4): DPO on R1-7B with the short answer chosen, LoRA
# rank 16, lr 5e-5, 3 epochs, max length 4096 (β and batch are not stated: TRL's β and Ada-R1's batch).
# bf16 is autocast over float32 weights (see TrainConfig.save_dtype); under DeepSpeed, its bf16 mode
# with float32 master weights in the optimizer.
_REAL: dict[str, Any] = dict(learning_rate=5e-7, num_train_epochs=2.0, effective_batch_size=32,
                             per_device_train_batch_size=1, max_length=4096, lr_scheduler_type="cosine",
                             warmup_steps=0.1, bf16=True, activation_checkpointing=True)
PRESETS: dict[str, dict[str, Any]] = {
    "adar1-7b": {**_REAL, "beta": 0.1},
    "adar1-1.5b": {**_REAL, "beta": 0.05},
    "wu-dpo": {**_REAL, "beta": 0.1, "learning_rate": 5e-5, "num_train_epochs": 3.0,
               "lora": {"r": 16, "lora_alpha": 32}},
    # CPU toy world (tiny Qwen2, ~100-token responses). Plain DPO at lr 5e-5 barely moves such a model
    # in a few hundred steps and at 5e-4 it shortens answers by unlearning them; the NLL term on the
    # chosen responses (RPO α = loss_weights[1]) keeps them likely while the DPO term moves mass off the
    # rejected ones. Measured on toy-s (α 0.8 merge, K 12, 500 train problems, 2000 bi-level pairs, 252
    # steps, ~50 s; test split, vs the long model): this preset 99.1% acc (-0.9 pt), -27.7% tokens,
    # long-CoT ratio 0/0/0/100/100% by level; plain DPO (loss_type ["sigmoid"]) 63.5% / -35.9%; plain DPO
    # at 5e-4 48.9% / -35.6%; this preset at lr 5e-5 78.3% / -20.7% (under-trained: mixed styles at
    # levels 1-3).
    "toy": dict(beta=0.1, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0], learning_rate=1e-4,
                num_train_epochs=2.0, effective_batch_size=16, per_device_train_batch_size=16, max_length=512,
                lr_scheduler_type="cosine", warmup_steps=0.1, bf16=False, activation_checkpointing=False,
                logging_steps=5),
}


def preset_config(name: str, /, **overrides: Any) -> TrainConfig:
    """Preset ``name`` with options replaced by ``overrides`` (flat, see the module docstring)."""
    return TrainConfig.from_options({"preset": name, **overrides}, source="options")


def _check_options(config: TrainConfig) -> None:
    """Every option against the TRL/PEFT dataclass it goes to (names and types, by :func:`l2s.config.check_fields`);
    an unknown name is reported with the closest known one."""
    from peft import LoraConfig
    from trl import DPOConfig, SFTConfig

    for name, reason in REFUSED.items():
        if name in config.args:
            raise ConfigError(f"{name} cannot be set: {reason}")
    dpo_fields = {f.name for f in dataclasses.fields(DPOConfig)}
    unknown = [k for k in config.args if k not in dpo_fields]
    if unknown:
        known = [*dpo_fields, *L2S_OPTIONS]
        hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, known, 1)) else repr(k)
                 for k in unknown]
        in_sft = [k for k in unknown if k in {f.name for f in dataclasses.fields(SFTConfig)}]
        raise ConfigError(f"unknown key(s) {unknown}: {', '.join(hints)}. Keys are l2s's {list(L2S_OPTIONS)} and "
                          f"the fields of trl.DPOConfig (see help(trl.DPOConfig))"
                          + (f"; SFTConfig-only options {in_sft} go under `sft:`" if in_sft else ""))
    check_fields(DPOConfig, config.args)
    reserved = [k for k in config.sft if k in REFUSED]
    if reserved:
        raise ConfigError(f"sft: {reserved} cannot be set: {'; '.join(REFUSED[k] for k in reserved)}")
    check_fields(SFTConfig, config.sft, key="sft")
    if config.lora is not None:
        if "task_type" in config.lora:
            raise ConfigError("lora.task_type cannot be set: it is CAUSAL_LM")
        check_fields(LoraConfig, config.lora, key="lora")
