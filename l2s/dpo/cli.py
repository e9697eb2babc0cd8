"""``l2s dpo``: DPO (or SFT) of a model on ``l2s pairs`` data (TRL), full fine-tuning or LoRA."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# Flags for the options most often changed; ``--set KEY=VALUE`` reaches every other one.
FLAGS = (("beta", float), ("learning-rate", float), ("num-train-epochs", float), ("max-steps", int),
         ("effective-batch-size", int), ("per-device-train-batch-size", int), ("max-length", int), ("seed", int),
         ("save-steps", int), ("save-total-limit", int))


def register(sub: argparse._SubParsersAction) -> None:
    from l2s.dpo.config import METHODS, PRESETS, SAVE_DTYPES

    p = sub.add_parser(
        "dpo", help="DPO (or SFT for the sft variant) on preference pairs; saves an HF checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune a model on `l2s pairs` output with TRL. Options are trl.DPOConfig's fields plus\n"
                    "l2s's (effective_batch_size, lora, save_dtype, method, sft); see l2s.dpo.config.\n"
                    "Precedence: flags and --set > --config > the preset\n"
                    "(--preset, else the config file's `preset:`, else toy).\n"
                    "Rerunning a killed command resumes it from its last checkpoint.\n"
                    "Multi-GPU (DeepSpeed ZeRO-3), see the l2s.dpo docstring:\n"
                    "  accelerate launch --config_file configs/accelerate/multi-gpu.yaml --num_processes 8 \\\n"
                    "    -m l2s dpo --model M --pairs P --preset adar1-7b \\\n"
                    "    --deepspeed configs/deepspeed/zero3.json --out O")
    p.add_argument("--model", required=True, help="checkpoint directory (or hub id) to train")
    p.add_argument("--pairs", required=True, type=Path, help="an `l2s pairs` output directory")
    p.add_argument("--out", required=True, type=Path, help="output checkpoint directory")
    p.add_argument("--preset", choices=sorted(PRESETS), help="default: the config file's `preset:`, else toy")
    p.add_argument("--config", type=Path, help="JSON/YAML file of options (may name a `preset:`)")
    p.add_argument("--set", dest="set_options", action="append", default=[], metavar="KEY=VALUE",
                   help="any option, the value read as YAML (e.g. --set 'loss_type=[sigmoid]'); repeatable")
    p.add_argument("--lora", action="store_const", const=True,
                   help="train LoRA adapters (merged at the end; settings from the config file's `lora:`)")
    p.add_argument("--method", choices=METHODS)
    for name, typ in FLAGS:
        p.add_argument(f"--{name}", type=typ)
    p.add_argument("--save-dtype", choices=SAVE_DTYPES, help="dtype of the saved weights (default float32)")
    p.add_argument("--deepspeed", help="DeepSpeed JSON config, e.g. configs/deepspeed/zero3.json (accelerate launch)")
    p.add_argument("--resume-from-checkpoint", help="a checkpoint directory (default: the run's last checkpoint)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_dpo)


def options_from_args(args) -> dict:
    """The flat options of the command line: the config file, then ``--set``, then the flags."""
    import yaml

    from l2s.prefs.config import read_config_file

    options = read_config_file(args.config) if args.config else {}
    for item in args.set_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        options[key.strip()] = yaml.safe_load(value)
    named = ["method", "save_dtype", "deepspeed", "resume_from_checkpoint",
             *(name.replace("-", "_") for name, _ in FLAGS)]
    options.update({name: getattr(args, name) for name in named if getattr(args, name) is not None})
    if args.lora and not isinstance(options.get("lora"), dict):  # keep the file's LoRA settings
        options["lora"] = True
    if args.preset:
        options["preset"] = args.preset
    options.setdefault("preset", "toy")
    return options


def run_dpo(args) -> int:
    from l2s.dpo.config import TrainConfig
    from l2s.dpo.train import train

    config = TrainConfig.from_options(options_from_args(args), str(args.config or "options"))
    out = train(args.model, args.pairs, args.out, config, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:  # one line under accelerate launch, not one per process
        print(out)
    return 0
