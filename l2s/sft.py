"""``l2s sft``: supervised fine-tuning on prompt/completion (or chat) JSONL with TRL's ``SFTTrainer``.

Ada-R1 (Luo et al. 2025, Sec. 4.1) gets its short-CoT model by fine-tuning the long model
(DeepSeek-R1-Distill-Qwen) on 2,000 short-CoT solutions in the long model's chat template, so that the
two models it merges share one template. ``l2s short-cot`` (:mod:`l2s.short_cot`) writes those rows;
this module trains on them::

    l2s sft --model deepseek-ai/DeepSeek-R1-Distill-Qwen-7B --data runs/short-cot-7b/sft.jsonl \\
        --preset short-cot --out runs/short-cot-7b/model
    accelerate launch --num_processes 8 -m l2s sft ... --deepspeed configs/deepspeed/zero3.json

Data: JSONL rows ``{prompt, completion}`` (text, the prompt already in the model's chat format, as the
generation backends send it) or ``{messages}`` (a chat ending in one assistant turn, rendered here:
prompt = the template over the earlier turns with the generation prompt, completion = the assistant text
+ the template's end of turn; see :func:`chat_prompt_completion`). Prompt and completion are tokenized
separately without special tokens, as at inference (the prompt text carries its own BOS), and the
tokenizer's eos is appended to a completion that does not end with it (TRL's rule). The loss is on the
completion tokens only (``completion_only_loss``); sequences are cut at ``max_length`` (kept from the
start, counted in the record).

Weights: the model is loaded in fp32 whatever its checkpoint's dtype, and ``bf16`` turns on bf16
autocast, so the optimizer updates fp32 master weights (updates of lr 1e-5 vanish in bf16 weights of
magnitude 1e-2). Under DeepSpeed its own bf16 mode keeps the fp32 masters. The output is saved in
``save_dtype`` (``auto``: the input checkpoint's dtype, e.g. bf16 for R1-distill); LoRA adapters are
merged into the weights first.

Output: an ordinary Hugging Face checkpoint (safetensors, config, generation_config, and the input's
tokenizer, chat template included) plus ``l2s_sft.json`` (config, model and data hashes, dtypes, token
counts, loss log, provenance), appearing whole (:func:`l2s.io.atomic_output_dir`). A rerun with the same
model, data and config finds it and returns at once; anything else over it needs ``overwrite``.

Presets. The paper gives no SFT hyper-parameters. ``short-cot`` follows the authors' LLaMA-Factory file
``LLaMA-Factory-YAMLs/ds-7b-short-sft.yaml`` (StarDewXXX/AdaR1): full fine-tuning, lr 1e-5, 1 epoch,
constant schedule after a 0.1 warmup, max length 4096, bf16, ZeRO-3, max_grad_norm 10, per-device
batch 4 x accumulation 2 (x 8 GPUs assumed, as their DPO file's 1 x 4 gives the paper's batch 32:
effective batch 64). Their file formats rows with LLaMA-Factory's ``deepseek3`` template
(``<bos><｜User｜>{q}<｜Assistant｜>{solution}<eos>``, no system prompt and no ``<think>``); here rows use
the long model's own template with the prompt the study samples with (see :mod:`l2s.short_cot`).
``toy``: a few fast CPU steps for tiny models and tests.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import os
import shutil
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from l2s import io

log = logging.getLogger(__name__)

RECORD = "l2s_sft.json"
TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")  # the trainer aligns them to the tokenizer
TOKENIZER_FILES = ("tokenizer", "special_tokens_map", "vocab", "merges", "added_tokens", "chat_template")
SaveDtype = Literal["auto", "float32", "bfloat16", "float16"]
SAVE_DTYPES = typing.get_args(SaveDtype)
_MARK = "\u0000l2s-turn-end\u0000"


@dataclass
class SFTTrainConfig:
    """Supervised fine-tuning. ``effective_batch_size`` = per-device batch x accumulation x processes;
    the accumulation is derived from it at launch (an error when it does not divide)."""

    preset: str = "custom"
    learning_rate: float = 1e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides the epochs
    effective_batch_size: int = 64
    per_device_train_batch_size: int = 1
    max_length: int | None = 4096
    lr_scheduler_type: str = "constant_with_warmup"
    warmup: float = 0.1  # fraction of the steps if < 1, else a number of steps
    weight_decay: float = 0.0
    max_grad_norm: float = 10.0
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    bf16: bool = False  # bf16 autocast over fp32 weights
    gradient_checkpointing: bool = False
    deepspeed: str | None = None  # a DeepSpeed JSON config, e.g. configs/deepspeed/zero3.json
    save_dtype: SaveDtype = "auto"
    logging_steps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("learning_rate", "num_train_epochs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("effective_batch_size", "per_device_train_batch_size", "lora_r", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"max_length must be >= 8 or null, got {self.max_length!r}")
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"save_dtype must be one of {SAVE_DTYPES}, got {self.save_dtype!r}")
        if self.lora and self.deepspeed:
            raise ValueError("lora with deepspeed is not supported here (the adapter merge needs the whole model "
                             "on one process); drop --deepspeed: LoRA fits one GPU")
        self.gradient_accumulation_steps(1)

    def gradient_accumulation_steps(self, world_size: int = 1) -> int:
        per_step = self.per_device_train_batch_size * world_size
        if self.effective_batch_size % per_step:
            raise ValueError(f"effective_batch_size {self.effective_batch_size} is not a multiple of "
                             f"per-device batch {self.per_device_train_batch_size} x {world_size} processes")
        return self.effective_batch_size // per_step

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    "short-cot": dict(learning_rate=1e-5, num_train_epochs=1.0, effective_batch_size=64, per_device_train_batch_size=1,
                      max_length=4096, lr_scheduler_type="constant_with_warmup", warmup=0.1, max_grad_norm=10.0,
                      bf16=True, gradient_checkpointing=True, logging_steps=2),
    "toy": dict(learning_rate=1e-3, num_train_epochs=2.0, effective_batch_size=4, per_device_train_batch_size=4,
                max_length=512, lr_scheduler_type="constant", warmup=0.0, max_grad_norm=1.0, bf16=False,
                gradient_checkpointing=False, logging_steps=1),
}


def preset_config(name: str, /, **overrides: Any) -> SFTTrainConfig:
    """A preset, with options replaced by ``overrides`` (type-checked, see :func:`from_preset`)."""
    return from_preset(name, overrides)


def from_preset(name: str, options: dict[str, Any], where: str = "options") -> SFTTrainConfig:
    """Preset ``name`` beneath ``options``, every value type-checked (:func:`l2s.config.parse`); errors
    name ``where`` (the config file)."""
    from l2s.config import ConfigError, parse

    if name not in PRESETS:
        raise ConfigError(f"{where}: unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return parse(SFTTrainConfig, {**PRESETS[name], **options, "preset": name}, where)


def turn_end(tokenizer) -> str:
    """What the chat template writes after an assistant message's text (R1: ``<｜end▁of▁sentence｜>``;
    ChatML: ``<|im_end|>\\n``); the eos token when the tokenizer has no template."""
    if not getattr(tokenizer, "chat_template", None):
        return tokenizer.eos_token or ""
    text = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": _MARK}],
                                         tokenize=False)
    if _MARK not in text:
        raise ValueError("the tokenizer's chat template does not render assistant messages; cannot format SFT rows")
    return text.split(_MARK, 1)[1]


def chat_prompt_completion(tokenizer, messages: list[dict], where: str) -> dict[str, str]:
    """A chat ending in an assistant turn as ``{prompt, completion}`` text: the prompt is what a generation
    backend sends (the earlier turns with the generation prompt, e.g. R1's ``<｜Assistant｜><think>\\n``),
    the completion the assistant text plus the template's end of turn. Rendering the whole chat instead
    would not do: R1's template drops what precedes ``</think>`` in an assistant turn and writes no
    ``<think>\\n``, so the prompt the model is trained on would differ from the one it is sampled with."""
    if not isinstance(messages, list) or len(messages) < 2 or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        raise ValueError(f"{where}: 'messages' must be a list of {{role, content}} with at least a user and an "
                         "assistant turn")
    if messages[-1].get("role") != "assistant":
        raise ValueError(f"{where}: the last message must be the assistant's (the completion), got "
                         f"{messages[-1].get('role')!r}")
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    return {"prompt": prompt, "completion": messages[-1]["content"] + turn_end(tokenizer)}


def read_examples(path: str | Path, tokenizer) -> tuple[list[dict[str, str]], str]:
    """The ``{prompt, completion}`` text of every row of a JSONL file, and its format
    (``prompt-completion`` or ``messages``); errors name the file, row and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SFT data {path} not found (a JSONL of {{prompt, completion}} or {{messages}} rows, "
                                "e.g. the sft.jsonl of `l2s short-cot`)")
    rows = io.read_jsonl(path)
    if not rows:
        raise ValueError(f"{path}: no rows")
    examples, formats = [], set()
    for i, row in enumerate(rows):
        where = f"{path} (row {i})"
        if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
            examples.append({"prompt": row["prompt"], "completion": row["completion"]})
            formats.add("prompt-completion")
        elif "messages" in row:
            examples.append(chat_prompt_completion(tokenizer, row["messages"], where))
            formats.add("messages")
        else:
            raise ValueError(f"{where}: needs string fields 'prompt' and 'completion', or 'messages' "
                             f"(row has {sorted(row)})")
        if not examples[-1]["completion"].strip():
            raise ValueError(f"{where}: empty completion")
    if len(formats) > 1:
        raise ValueError(f"{path}: mixes prompt/completion and messages rows; use one format")
    return examples, formats.pop()


def tokenize_examples(tokenizer, examples: list[dict[str, str]]) -> dict[str, list]:
    """``input_ids`` and ``completion_mask`` (1 on completion tokens) per example, prompt and completion
    tokenized apart without special tokens; eos appended to a completion not ending with it."""
    eos = tokenizer.eos_token
    input_ids, masks = [], []
    for ex in examples:
        completion = ex["completion"] if eos is None or ex["completion"].endswith(eos) else ex["completion"] + eos
        p = tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"]
        input_ids.append(p + c)
        masks.append([0] * len(p) + [1] * len(c))
    return {"input_ids": input_ids, "completion_mask": masks}


def checkpoint_dtype(model_path: str) -> str:
    """The dtype a checkpoint's config declares (``float32`` when it declares none)."""
    from transformers import AutoConfig

    dtype = getattr(AutoConfig.from_pretrained(model_path), "dtype", None)
    return str(dtype).removeprefix("torch.") if dtype is not None else "float32"


def save_tokenizer(model_path: str, target: Path) -> None:
    """The input model's tokenizer into ``target``: a local checkpoint's files copied byte for byte (its chat
    template exactly as it was), a hub model's tokenizer saved as loaded."""
    source = Path(model_path)
    if source.is_dir():
        for f in sorted(source.iterdir()):
            if f.is_file() and f.name.startswith(TOKENIZER_FILES):
                shutil.copy2(f, target / f.name)
        return
    from l2s.tokenizers import load_tokenizer

    load_tokenizer(model_path).save_pretrained(target)


def _request(model_path: str, data: Path, config: SFTTrainConfig) -> dict[str, Any]:
    from l2s.provenance import checkpoint_record, file_sha256

    return {"model": checkpoint_record(model_path), "data": {"path": str(data), "sha256": file_sha256(data)},
            "config": config.to_dict()}


def build_trainer(model, tokenizer, tokenized: dict[str, list], config: SFTTrainConfig, workdir: Path):
    """TRL's ``SFTTrainer`` over ``tokenized`` (:func:`tokenize_examples`), loss on completions only."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = SFTConfig(
        output_dir=str(workdir), learning_rate=config.learning_rate, num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps, per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps(world), max_length=config.max_length,
        lr_scheduler_type=config.lr_scheduler_type, warmup_steps=config.warmup, weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm, bf16=config.bf16, fp16=False,
        use_cpu=config.bf16 and not torch.cuda.is_available(),  # transformers refuses bf16 on CPU without it
        activation_checkpointing=config.gradient_checkpointing, deepspeed=config.deepspeed,
        completion_only_loss=True, packing=False, logging_steps=config.logging_steps, save_strategy="no",
        report_to="none", seed=config.seed, data_seed=config.seed, dataloader_num_workers=0)
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        targets = config.lora_target_modules
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules="all-linear" if targets == ["all-linear"] else targets,
                                 task_type="CAUSAL_LM")
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(tokenized), processing_class=tokenizer,
                      peft_config=peft_config)


def train_sft(model_path: str | Path, data: str | Path, out: str | Path, config: SFTTrainConfig,
              overwrite: bool = False) -> Path:
    """Fine-tune ``model_path`` on ``data``; the checkpoint appears at ``out`` (reused when up to date)."""
    import torch
    from transformers import AutoModelForCausalLM

    from l2s.provenance import provenance
    from l2s.tokenizers import load_tokenizer

    out, data, model_path = Path(out), Path(data), str(model_path)
    if not Path(model_path).exists() and (model_path.startswith((".", "/")) or model_path.count("/") != 1):
        raise FileNotFoundError(f"model {model_path} not found (a local checkpoint directory or a hub id)")
    if not data.is_file():
        raise FileNotFoundError(f"SFT data {data} not found")
    request = _request(model_path, data, config)
    if (out / RECORD).is_file() and io.read_json(out / RECORD).get("request") == request:
        log.info("%s is up to date (same model, data and config)", out)
        return out
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists and was made from another model, data or config; pass "
                              "--overwrite to replace it, or choose another --out")
    io.check_replaceable(out, overwrite)  # before training: --overwrite replaces only what l2s wrote
    world = int(os.environ.get("WORLD_SIZE", "1"))
    config.gradient_accumulation_steps(world)  # fail before loading a model

    try:
        tokenizer = load_tokenizer(model_path)
    except OSError as e:
        raise FileNotFoundError(f"cannot load the tokenizer of model {model_path}: {e}") from e
    examples, data_format = read_examples(data, tokenizer)
    tokenized = tokenize_examples(tokenizer, examples)
    source_dtype = checkpoint_dtype(model_path)
    save_dtype = source_dtype if config.save_dtype == "auto" else config.save_dtype
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    special_ids = {k: getattr(model.config, k, None) for k in TOKEN_IDS}
    generation_config = copy.deepcopy(model.generation_config)
    work = out.with_name(f".{out.name}.partial")  # one path for every process (DeepSpeed saves from all)
    if int(os.environ.get("RANK", "0")) == 0 and work.exists():
        shutil.rmtree(work)  # left by a killed run: training restarts from the model
    trainer = build_trainer(model, tokenizer, tokenized, config, work / "trainer")
    acc = trainer.accelerator
    try:
        result = trainer.train()
        acc.wait_for_everyone()
        trained = acc.unwrap_model(trainer.model)
        if config.lora:
            trained = trained.merge_and_unload()
        for k, v in special_ids.items():  # the checkpoint keeps the input's token ids and generation settings
            setattr(trained.config, k, v)
        trained.generation_config = generation_config
        trained.config.use_cache = True
        if config.deepspeed:
            trainer.save_model(str(work / "model"))  # gathers the ZeRO-3 shards on every process
        elif acc.is_main_process:
            trained.to(getattr(torch, save_dtype)).save_pretrained(work / "model", safe_serialization=True)
        if acc.is_main_process:
            lengths = [len(ids) for ids in tokenized["input_ids"]]
            record = {
                "kind": "sft", "request": request, "config": config.to_dict(),
                "data": {**request["data"], "format": data_format, "rows": len(examples),
                         "trained_rows": trainer.train_dataset.num_rows, "tokens": sum(lengths),
                         "cut_at_max_length": sum(n > (config.max_length or n) for n in lengths)},
                "loss": "completion tokens only",
                "dtypes": {"checkpoint": source_dtype, "weights": "float32",
                           "autocast": "bfloat16" if config.bf16 else None,
                           "saved": checkpoint_dtype(str(work / "model"))},
                "train": {"global_step": result.global_step, "metrics": result.metrics},
                "log_history": trainer.state.log_history,
                "provenance": provenance(seed=config.seed, world_size=acc.num_processes),
            }
            with io.atomic_output_dir(out, overwrite=True) as tmp:
                for f in (work / "model").iterdir():
                    os.replace(f, tmp / f.name)
                save_tokenizer(model_path, tmp)  # the input's, not the one the trainer gave a pad token
                io.atomic_write_json(tmp / RECORD, record)
            shutil.rmtree(work, ignore_errors=True)
        acc.wait_for_everyone()
    except BaseException:
        if acc.is_main_process:
            shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def register(sub: argparse._SubParsersAction) -> None:
    from l2s.config import add_flags

    p = sub.add_parser(
        "sft", help="supervised fine-tuning on prompt/completion JSONL (TRL), full or LoRA; saves an HF checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune a model on {prompt, completion} or {messages} JSONL (e.g. `l2s short-cot` output), "
                    "loss on completions only. Precedence: flags > --config > the preset\n"
                    "(--preset, else the config file's `preset:`, else toy).\n"
                    "Multi-GPU: accelerate launch --num_processes N -m l2s sft \\\n"
                    "    --model M --data D --preset short-cot --deepspeed configs/deepspeed/zero3.json --out O")
    p.add_argument("--model", required=True, help="checkpoint directory (or hub id) to train")
    p.add_argument("--data", required=True, type=Path, help="JSONL of {prompt, completion} or {messages} rows")
    p.add_argument("--out", required=True, type=Path, help="output checkpoint directory")
    p.add_argument("--preset", choices=sorted(PRESETS), help="default: the config file's `preset:`, else toy")
    p.add_argument("--config", type=Path, help="JSON/YAML file of SFTTrainConfig options (may name a `preset:`)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out made from other inputs")
    add_flags(p, "l2s.sft:SFTTrainConfig", exclude=("preset",), help={
        "lora": "train LoRA adapters (merged at the end)", "bf16": "bf16 autocast over fp32 weights",
        "max_steps": "> 0 overrides the epochs", "warmup": "fraction of the steps if < 1, else a number of steps",
        "save_dtype": "dtype of the saved weights (default auto: the input's)",
        "deepspeed": "DeepSpeed JSON config (with accelerate launch)"})
    p.set_defaults(func=run_sft)


def config_from_args(args) -> SFTTrainConfig:
    """The config of an ``l2s sft`` command line: the preset (``--preset``, else the ``--config`` file's
    ``preset:``, else toy) beneath the file's options, beneath the flags given."""
    from l2s.config import given, read_file, where_of

    options = read_file(args.config) if args.config else {}
    preset = args.preset or options.get("preset") or "toy"
    options.update(given(SFTTrainConfig, args))
    options.pop("preset", None)
    return from_preset(preset, options, where_of(args))


def run_sft(args) -> int:
    print(train_sft(args.model, args.data, args.out, config_from_args(args), overwrite=args.overwrite))
    return 0
