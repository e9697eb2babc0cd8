"""``l2s merge``: merge checkpoints with any method of :mod:`l2s.merge.methods`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge", help="merge checkpoints (average, TA, TIES, DARE, linear, LoRE, Twin, AIM, Sens)",
        description="Merge HF safetensors checkpoints tensor by tensor with bounded memory. Methods: "
                    "average, task_arithmetic, ties, linear, lore, twin, sens; modifiers dare and aim "
                    "combine with '+' (dare+ties, aim+ties). Example: l2s merge --method ties --base "
                    "Qwen/Qwen2.5-Math-7B --models deepseek-ai/DeepSeek-R1-Distill-Qwen-7B --param k=0.8 "
                    "--param alpha=1.0 --out runs/ties-7b")
    p.add_argument("--config", help="YAML file with MergeConfig fields; flags given here override it")
    p.add_argument("--method", help="method string, e.g. ties, dare+ties, aim+ties, linear")
    p.add_argument("--base", help="base model θ0 (local dir or hub id)")
    p.add_argument("--models", help="comma-separated models to merge (linear: LONG,SHORT)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="hyper-parameter (repeatable)")
    p.add_argument("--out", help="output checkpoint directory")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing output")
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", help="output dtype: auto (the inputs'), bfloat16, float16, float32")
    p.add_argument("--compute-dtype", dest="compute_dtype", help="dtype of the arithmetic (default float32)")
    p.add_argument("--tokenizer-source", dest="tokenizer_source",
                   help="input giving tokenizer, config and extra vocabulary rows (default: the first model)")
    p.add_argument("--shard-size", dest="shard_size", help="maximum output shard size (default 5GB)")
    p.add_argument("--calibration", help="AIM / Sens-Merging calibration file(s), comma-separated")
    p.add_argument("--calibration-samples", dest="calibration_samples", type=int)
    p.add_argument("--input-hash", dest="input_hash", choices=("sampled", "full"),
                   help="fingerprint of local input shards in l2s_merge.json: sampled SHA-256 (default, "
                        "milliseconds) or full SHA-256 (reads every byte)")
    p.set_defaults(func=run)


def config_from_args(args) -> "MergeConfig":  # noqa: F821
    import yaml

    from l2s.cli import UserError
    from l2s.merge.config import MergeConfig, parse_value

    fields: dict = {}
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            fields = yaml.safe_load(f) or {}
        if not isinstance(fields, dict):
            raise UserError(f"{args.config}: expected a mapping of MergeConfig fields")
    for key in ("method", "base", "models", "out", "overwrite", "seed", "dtype", "compute_dtype",
                "tokenizer_source", "shard_size", "calibration", "calibration_samples", "input_hash"):
        value = getattr(args, key)
        if value is not None:
            fields[key] = value
    params = dict(fields.get("params") or {})
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--param {item!r}: expected NAME=VALUE, e.g. --param k=0.8")
        params[name.strip()] = parse_value(value)
    fields["params"] = params
    missing = [k for k in ("method", "models", "out") if not fields.get(k)]
    if missing:
        raise UserError(f"missing {', '.join('--' + k for k in missing)} (or give them in --config)")
    return MergeConfig.from_dict(fields)


def run(args) -> int:
    from l2s.merge import merge

    out = merge(config_from_args(args))
    print(out)
    return 0
