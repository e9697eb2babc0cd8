"""Fine-tune a (merged) model on ``l2s pairs`` data with TRL's ``DPOTrainer`` (or ``SFTTrainer``).

Single process: ``l2s dpo --model M --pairs P --preset toy --out O``. Several GPUs (DeepSpeed ZeRO-3)::

    accelerate launch --num_processes 8 -m l2s dpo \\
        --model runs/merge-7b --pairs runs/pairs-7b --preset adar1-7b \\
        --deepspeed configs/deepspeed/zero3.json --out runs/adar1-7b

The output is a normal Hugging Face checkpoint (safetensors, config, generation_config, tokenizer;
LoRA adapters merged into the weights) plus ``l2s_train.json`` (config, inputs, loss log,
provenance). It appears whole: training writes into ``.<out>.partial`` and renames it at the end.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from l2s.dpo.config import TrainConfig
from l2s.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

COLUMNS = {"dpo": ("prompt", "chosen", "rejected"), "sft": ("prompt", "completion")}


def load_pairs(pairs_dir: str | Path):
    """``(dataset, pairs config.json)`` of an ``l2s pairs`` run, checked."""
    from datasets import load_from_disk

    pairs_dir = Path(pairs_dir)
    meta_path = pairs_dir / "config.json"
    if not meta_path.is_file() or not (pairs_dir / "dataset").is_dir():
        raise FileNotFoundError(f"{pairs_dir} is not an `l2s pairs` output (needs config.json and dataset/)")
    meta = read_json(meta_path)
    if meta.get("kind") != "pairs":
        raise ValueError(f"{meta_path}: not a pairs config (kind={meta.get('kind')!r})")
    ds = load_from_disk(str(pairs_dir / "dataset"))
    if ds.num_rows == 0:
        raise ValueError(f"{pairs_dir}: the dataset has no rows")
    return ds, meta


def resolve_method(config: TrainConfig, meta: dict[str, Any], columns: list[str]) -> str:
    data_method = "sft" if meta.get("format") == "prompt-completion" else "dpo"
    method = data_method if config.method == "auto" else config.method
    if method != data_method:
        raise ValueError(f"method {method!r} needs {'prompt/completion' if method == 'sft' else 'preference'} "
                         f"data, but the pairs are {meta.get('format')!r} (variant {meta.get('pairs', {}).get('variant')!r})")
    missing = [c for c in COLUMNS[method] if c not in columns]
    if missing:
        raise ValueError(f"the pairs dataset lacks column(s) {missing} needed for {method}")
    return method


def _model_info(model_path: str) -> dict[str, Any]:
    from l2s.provenance import file_sha256

    path = Path(model_path)
    info: dict[str, Any] = {"path": model_path}
    if path.is_dir():
        for name in ("config.json", "model.safetensors.index.json", "model.safetensors"):
            if (path / name).is_file() and (path / name).stat().st_size < 2**31:
                info[f"sha256:{name}"] = file_sha256(path / name)
        for name in ("l2s_merge.json", "l2s_train.json", "l2s_toy.json"):
            if (path / name).is_file():
                info[name] = read_json(path / name)
    return info


def _trainer(method: str, model, tokenizer, dataset, config: TrainConfig, workdir: Path):
    """The TRL trainer for ``method``, its arguments filled from ``config``."""
    common = dict(
        output_dir=str(workdir), learning_rate=config.learning_rate, num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps, per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps(int(os.environ.get("WORLD_SIZE", "1"))),
        max_length=config.max_length, lr_scheduler_type=config.lr_scheduler_type, warmup_steps=config.warmup,
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm, bf16=config.bf16,
        activation_checkpointing=config.gradient_checkpointing, deepspeed=config.deepspeed,
        logging_steps=config.logging_steps, save_strategy="no", report_to="none", seed=config.seed,
        data_seed=config.seed, dataloader_num_workers=0,
    )
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        targets = config.lora_target_modules
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules="all-linear" if targets == ["all-linear"] else targets,
                                 task_type="CAUSAL_LM")
    dataset = dataset.select_columns(list(COLUMNS[method]))
    if method == "sft":
        from trl import SFTConfig, SFTTrainer

        return SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config)
    from trl import DPOConfig, DPOTrainer

    loss = dict(loss_type=[config.loss_type])
    if config.rpo_alpha:
        loss = dict(loss_type=[config.loss_type, "sft"], loss_weights=[1.0, config.rpo_alpha])
    args = DPOConfig(**common, beta=config.beta, precompute_ref_log_probs=config.precompute_ref_log_probs, **loss)
    return DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config)


def train(model_path: str | Path, pairs_dir: str | Path, out: str | Path, config: TrainConfig,
          overwrite: bool = False) -> Path:
    """Train ``model_path`` on the pairs in ``pairs_dir``; the checkpoint appears at ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    from l2s.provenance import file_sha256, provenance
    from l2s.tokenizers import load_tokenizer

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    dataset, meta = load_pairs(pairs_dir)
    method = resolve_method(config, meta, dataset.column_names)
    model_path = str(model_path)
    if not Path(model_path).exists() and (model_path.startswith((".", "/")) or model_path.count("/") != 1):
        raise FileNotFoundError(f"model {model_path} not found (a local checkpoint directory or a hub id)")
    config.gradient_accumulation_steps(int(os.environ.get("WORLD_SIZE", "1")))  # fail before loading a model

    try:
        tokenizer = load_tokenizer(model_path)
    except OSError as e:
        raise FileNotFoundError(f"cannot load the tokenizer of model {model_path}: {e}") from e
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if config.bf16 else torch.float32)
    work = out.with_name(f".{out.name}.partial")
    if int(os.environ.get("RANK", "0")) == 0 and work.exists():
        shutil.rmtree(work)  # left by a killed run: training restarts from the model
    trainer = _trainer(method, model, tokenizer, dataset, config, work / "trainer")
    acc = trainer.accelerator
    try:
        result = trainer.train()
        acc.wait_for_everyone()
        if config.lora:
            if acc.is_main_process:
                merged = acc.unwrap_model(trainer.model).merge_and_unload()
                merged.config.use_cache = True
                merged.save_pretrained(work / "model", safe_serialization=True)
        else:
            acc.unwrap_model(trainer.model).config.use_cache = True
            trainer.save_model(str(work / "model"))  # gathers ZeRO-3 shards on every rank
        if acc.is_main_process:
            tokenizer.save_pretrained(work / "model")
            pairs_file = Path(pairs_dir) / "pairs.jsonl"
            atomic_write_json(work / "model" / "l2s_train.json", {
                "method": method, "config": config.to_dict(),
                "model": _model_info(model_path),
                "pairs": {"path": str(pairs_dir), "config": meta, "n_rows": dataset.num_rows,
                          "sha256:pairs.jsonl": file_sha256(pairs_file) if pairs_file.is_file() else None},
                "train": {"global_step": result.global_step, "metrics": result.metrics},
                "log_history": trainer.state.log_history,
                "provenance": provenance(seed=config.seed, world_size=acc.num_processes),
            })
            if out.exists():
                old = out.with_name(f".{out.name}.old-{os.getpid()}")
                os.replace(out, old)
                os.replace(work / "model", out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(work / "model", out)
            shutil.rmtree(work, ignore_errors=True)
        acc.wait_for_everyone()
    except BaseException:
        if acc.is_main_process:
            shutil.rmtree(work, ignore_errors=True)
        raise
    return out
