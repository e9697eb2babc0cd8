"""``l2s dpo``: DPO (or SFT) of a model on ``l2s pairs`` data (TRL), full fine-tuning or LoRA."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

OWN_FLAGS = ("method", "effective_batch_size", "save_dtype")  # TrainConfig fields given as flags


def register(sub: argparse._SubParsersAction) -> None:
    from l2s.config import add_flags
    from l2s.dpo.config import PRESETS, REFUSED

    p = sub.add_parser(
        "dpo", help="DPO (or SFT for the sft variant) on preference pairs; saves an HF checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="l2s dpo --model M --pairs P --out O [--preset NAME] [--config FILE] [--set KEY=VALUE] [--lora]\n"
              "               [--overwrite] [l2s options] [trl.DPOConfig options]",
        description="Fine-tune a model on `l2s pairs` output with TRL. Options are trl.DPOConfig's fields (every one\n"
                    "a flag, e.g. --beta 0.1, --learning-rate 5e-7) plus l2s's (effective_batch_size, lora,\n"
                    "save_dtype, method, sft); see l2s.dpo.config.\n"
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
    p.add_argument("--overwrite", action="store_true")
    add_flags(p, "l2s.dpo.config:TrainConfig", OWN_FLAGS, help={
        "method": "auto: sft for prompt/completion pairs (the sft variant), else dpo",
        "effective_batch_size": "pairs per optimizer step (per-device batch x accumulation x processes)",
        "save_dtype": "dtype of the saved weights (default float32)"})
    add_flags(p, "trl:DPOConfig", exclude=REFUSED, title="trl.DPOConfig options (help(trl.DPOConfig))")
    p.set_defaults(func=run_dpo)


def options_from_args(args) -> dict:
    """The flat options of the command line: the config file, then ``--set``, then the flags; the preset is
    ``--preset``, else the file's ``preset:``, else ``toy``."""
    from trl import DPOConfig

    from l2s.config import ConfigError, given, read_file, yaml_value

    options = read_file(args.config) if args.config else {}
    for item in args.set_options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        options[key.strip()] = yaml_value(value, f"--set {key.strip()}")
    options.update(given(DPOConfig, args))
    options.update({k: getattr(args, k) for k in OWN_FLAGS if getattr(args, k, None) is not None})
    if args.lora and not isinstance(options.get("lora"), dict):  # keep the file's LoRA settings
        options["lora"] = True
    if args.preset:
        options["preset"] = args.preset
    options.setdefault("preset", "toy")
    return options


def config_from_args(args):
    """The :class:`l2s.dpo.config.TrainConfig` of the command line (:func:`options_from_args`)."""
    from l2s.config import where_of
    from l2s.dpo.config import TrainConfig

    return TrainConfig.from_options(options_from_args(args), where_of(args))


def run_dpo(args) -> int:
    from l2s.dpo.train import train

    out = train(args.model, args.pairs, args.out, config_from_args(args), overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:  # one line under accelerate launch, not one per process
        print(out)
    return 0
