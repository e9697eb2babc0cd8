"""``l2s dpo``: DPO (or SFT) of a model on ``l2s pairs`` data (TRL), full fine-tuning or LoRA."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from l2s.dpo.config import PRESETS

    p = sub.add_parser(
        "dpo", help="DPO (or SFT for the sft variant) on preference pairs; saves an HF checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune a model on `l2s pairs` output with TRL. Precedence: options > --config > --preset.\n"
                    "Multi-GPU: accelerate launch --num_processes N -m l2s dpo \\\n"
                    "    --model M --pairs P --preset adar1-7b --deepspeed configs/deepspeed/zero3.json --out O")
    p.add_argument("--model", required=True, help="checkpoint directory (or hub id) to train")
    p.add_argument("--pairs", required=True, type=Path, help="an `l2s pairs` output directory")
    p.add_argument("--out", required=True, type=Path, help="output checkpoint directory")
    p.add_argument("--preset", default="toy", choices=sorted(PRESETS), help="default: toy")
    p.add_argument("--config", type=Path, help="JSON/YAML file of TrainConfig options")
    p.add_argument("--lora", action="store_const", const=True, help="train LoRA adapters (merged at the end)")
    p.add_argument("--method", choices=("auto", "dpo", "sft"))
    for name, typ in (("beta", float), ("rpo-alpha", float), ("learning-rate", float), ("num-train-epochs", float),
                      ("max-steps", int), ("effective-batch-size", int), ("per-device-train-batch-size", int),
                      ("max-length", int), ("seed", int)):
        p.add_argument(f"--{name}", type=typ)
    p.add_argument("--deepspeed", help="DeepSpeed JSON config (with accelerate launch)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_dpo)


def run_dpo(args) -> int:
    from l2s.dpo.config import TrainConfig, preset_config
    from l2s.dpo.train import train
    from l2s.prefs.config import config_from_mapping, read_config_file

    options = read_config_file(args.config) if args.config else {}
    config_from_mapping(TrainConfig, options, str(args.config))  # unknown keys / wrong types fail here
    for name in ("lora", "method", "beta", "rpo_alpha", "learning_rate", "num_train_epochs", "max_steps",
                 "effective_batch_size", "per_device_train_batch_size", "max_length", "seed", "deepspeed"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    options.pop("preset", None)
    config = preset_config(args.preset, **options)
    print(train(args.model, args.pairs, args.out, config, overwrite=args.overwrite))
    return 0
