"""``l2s merge``: merge checkpoints with any method of :mod:`l2s.merge.methods`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from l2s.config import add_flags

    p = sub.add_parser(
        "merge", help="merge checkpoints (average, TA, TIES, DARE, linear, LoRE, Twin, AIM, Sens)",
        description="Merge HF safetensors checkpoints tensor by tensor with bounded memory. Methods: "
                    "average, task_arithmetic, ties, linear, lore, twin, sens; modifiers dare and aim "
                    "combine with '+' (dare+ties, aim+ties). Example: l2s merge --method ties --base "
                    "Qwen/Qwen2.5-Math-7B --models deepseek-ai/DeepSeek-R1-Distill-Qwen-7B --param k=0.8 "
                    "--param alpha=1.0 --out runs/ties-7b")
    p.add_argument("--config", help="YAML or JSON file of MergeConfig fields; flags given here override it")
    p.add_argument("--models", help="comma-separated models to merge (linear: LONG,SHORT)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="hyper-parameter (repeatable)")
    p.add_argument("--shard-size", dest="shard_size", help="maximum output shard size (default 5GB)")
    p.add_argument("--calibration", help="AIM / Sens-Merging calibration file(s), comma-separated")
    add_flags(p, "l2s.merge.config:MergeConfig", (
        "method", "base", "out", "overwrite", "seed", "dtype", "compute_dtype", "tokenizer_source",
        "calibration_samples", "calibration_max_tokens", "input_hash"), help={
        "method": "method string, e.g. ties, dare+ties, aim+ties, linear",
        "base": "base model θ0 (local dir or hub id)",
        "out": "output checkpoint directory", "overwrite": "replace an existing output",
        "dtype": "output dtype: auto (the inputs'), bfloat16, float16, float32",
        "compute_dtype": "dtype of the arithmetic (default float32)",
        "tokenizer_source": "input giving tokenizer, config and extra vocabulary rows (default: the first model)",
        "input_hash": "fingerprint of local input shards in l2s_merge.json: sampled SHA-256 (default, "
                      "milliseconds) or full SHA-256 (reads every byte)"})
    p.set_defaults(func=run)


def config_from_args(args) -> MergeConfig:  # noqa: F821
    """The ``--config`` file's fields, overridden by the flags given (``--param`` adds to its ``params``)."""
    from l2s.cli import UserError
    from l2s.config import merge, options_from_args, where_of
    from l2s.merge.config import MergeConfig, parse_assignments

    options = options_from_args(MergeConfig, args)
    for key in ("models", "calibration"):
        if isinstance(getattr(args, key), str):  # comma-separated on the command line
            options[key] = [x for x in getattr(args, key).split(",") if x]
    params = parse_assignments(args.param, "--param")
    options = merge(options, {"params": params}) if params else options
    missing = [k for k in ("method", "models", "out") if not options.get(k)]
    if missing:
        raise UserError(f"missing {', '.join('--' + k for k in missing)} (or give them in --config)")
    return MergeConfig.from_dict(options, where_of(args))


def run(args) -> int:
    from l2s.merge import merge

    out = merge(config_from_args(args))
    print(out)
    return 0
