"""``l2s eval`` (generate + grade a model), ``l2s score`` (saved responses), ``l2s compare RUN REF``."""

from __future__ import annotations

import argparse
from pathlib import Path

from l2s.eval.prompts import PROMPTS


def _tag(text: str) -> tuple[str, object]:
    import json

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"tag must be key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)  # numbers, booleans, {"k": 0.8} stay typed
    except json.JSONDecodeError:
        return key, value


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="generate, grade and measure a model on benchmarks",
                       description="Generate responses (vLLM or transformers), grade them with math-verify "
                                   "and write a resumable run directory.")
    e.add_argument("--model", help="model directory or hub id")
    e.add_argument("--datasets", help="comma-separated: gsm8k,math500,minerva_math,olympiadbench,"
                                      "college_math,aime24,aime25,math,toy")
    e.add_argument("--data-dir", help="directory of <dataset>/<split>.jsonl (default: the hub; toy: generated)")
    e.add_argument("--split", help="split (default test)")
    e.add_argument("--prompt", choices=list(PROMPTS))
    e.add_argument("--exemplars", help="cot exemplars (JSON list or JSONL of {question, answer})")
    e.add_argument("--tokenizer", help="tokenizer directory (default: the model's)")
    e.add_argument("--max-new-tokens", type=int)
    e.add_argument("--temperature", type=float)
    e.add_argument("--top-p", type=float)
    e.add_argument("--top-k", type=int)
    e.add_argument("--n", type=int, help="samples per problem")
    e.add_argument("--seed", type=int)
    e.add_argument("--backend", choices=["auto", "vllm", "hf"])
    e.add_argument("--batch-size", type=int, help="hf backend batch size")
    e.add_argument("--tensor-parallel-size", type=int, help="vllm: GPUs per model")
    e.add_argument("--data-parallel-size", type=int,
                   help="vllm: worker processes, each on its own --tensor-parallel-size GPUs (default 1)")
    e.add_argument("--dtype")
    e.add_argument("--max-model-len", type=int,
                   help="context for prompt + response (default: the model's max_position_embeddings); "
                        "longer budgets are capped and recorded")
    e.add_argument("--gpu-memory-utilization", type=float, help="vllm: share of GPU memory (default 0.9)")
    e.add_argument("--out", help="run directory, e.g. runs/NAME (rerun to resume)")
    e.add_argument("--config", type=Path, help="JSON or YAML file of EvalConfig fields; flags override it")
    e.add_argument("--limit", type=int, help="first N problems of each dataset")
    e.add_argument("--tag", action="append", type=_tag, default=[], metavar="KEY=VALUE",
                   help="free-form label saved in config.json 'tags' (repeatable; JSON values parsed)")
    e.add_argument("--grading-timeout", type=float)
    e.add_argument("--truncation-policy", choices=["wrong", "grade"])
    e.set_defaults(func=run_eval)

    s = sub.add_parser("score", help="grade and measure saved responses (JSONL) from any tool")
    s.add_argument("--responses", required=True, type=Path,
                   help="JSONL rows with 'response' and 'answer' or 'dataset'+'id'; optional 'level'")
    s.add_argument("--tokenizer", required=True, help="the model's tokenizer, to count response tokens")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--data-dir", help="benchmarks, to look up gold answers by dataset + id")
    s.add_argument("--max-new-tokens", type=int, help="responses this long count as truncated")
    s.add_argument("--truncation-policy", choices=["wrong", "grade"], default="wrong")
    s.add_argument("--workers", type=int, help="grading processes")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=run_score)

    c = sub.add_parser("compare", help="length reduction and accuracy deltas of RUN vs REF")
    c.add_argument("run", type=Path, help="run directory (or its metrics.json)")
    c.add_argument("ref", type=Path, help="reference run directory (or its metrics.json)")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=run_compare)


def _load_config_file(path: Path) -> dict:
    import json

    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: corrupt config ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of EvalConfig fields")
    return data


def eval_config_from_args(args):
    from l2s.cli import UserError
    from l2s.eval.run import EvalConfig

    d = _load_config_file(args.config) if args.config else {}
    for flag, key in [("model", "model"), ("datasets", "datasets"), ("data_dir", "data_dir"), ("split", "split"),
                      ("prompt", "prompt"), ("exemplars", "exemplars"), ("tokenizer", "tokenizer"),
                      ("backend", "backend"), ("batch_size", "batch_size"),
                      ("tensor_parallel_size", "tensor_parallel_size"),
                      ("data_parallel_size", "data_parallel_size"), ("dtype", "dtype"), ("out", "out"),
                      ("limit", "limit"), ("max_model_len", "max_model_len"),
                      ("gpu_memory_utilization", "gpu_memory_utilization")]:
        if getattr(args, flag) is not None:
            d[key] = getattr(args, flag)
    sampling = dict(d.get("sampling") or {})
    for flag, key in [("max_new_tokens", "max_new_tokens"), ("temperature", "temperature"), ("top_p", "top_p"),
                      ("top_k", "top_k"), ("n", "n"), ("seed", "seed")]:
        if getattr(args, flag) is not None:
            sampling[key] = getattr(args, flag)
    d["sampling"] = sampling
    grading = dict(d.get("grading") or {})
    if args.grading_timeout is not None:
        grading["timeout_s"] = args.grading_timeout
    if args.truncation_policy is not None:
        grading["truncation_policy"] = args.truncation_policy
    d["grading"] = grading
    d["tags"] = {**(d.get("tags") or {}), **dict(args.tag)}
    for required in ("model", "datasets", "out"):
        if not d.get(required):
            raise UserError(f"--{required} is required (or set it in --config)")
    if isinstance(d["datasets"], str):
        d["datasets"] = [x.strip() for x in d["datasets"].split(",") if x.strip()]
    try:
        return EvalConfig.from_dict(d)
    except TypeError as e:
        raise UserError(f"bad eval config: {e}") from e


def run_eval(args) -> int:
    from l2s.eval.run import evaluate

    out = evaluate(eval_config_from_args(args))
    print(out)
    return 0


def run_score(args) -> int:
    from l2s.eval.grading import GradeConfig
    from l2s.eval.score import ScoreConfig, score_responses

    cfg = ScoreConfig(responses=str(args.responses), tokenizer=args.tokenizer, out=str(args.out),
                      data_dir=args.data_dir, max_new_tokens=args.max_new_tokens, overwrite=args.overwrite,
                      grading=GradeConfig(truncation_policy=args.truncation_policy, workers=args.workers))
    print(score_responses(cfg))
    return 0


def _metrics(path: Path) -> dict:
    from l2s import io

    p = path / "metrics.json" if path.is_dir() else path
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found (is {path} a finished run?)")
    return io.read_json(p)


def format_comparison(cmp: dict) -> str:
    lines = [f"{'dataset':<16}{'acc':>8}{'ref acc':>9}{'Δacc':>8}{'tokens':>10}{'ref tok':>10}{'length':>9}"]
    for name, d in cmp["datasets"].items():
        lines.append(f"{name:<16}{d['accuracy']*100:>7.1f}%{d['ref_accuracy']*100:>8.1f}%"
                     f"{d['accuracy_delta']*100:>+7.1f}%{d['mean_tokens']:>10.1f}{d['ref_mean_tokens']:>10.1f}"
                     f"{d['length_change']*100:>+8.1f}%")
    a = cmp["avg"]
    lines.append(f"{'Avg':<16}{a['accuracy']*100:>7.1f}%{a['ref_accuracy']*100:>8.1f}%"
                 f"{a['accuracy_delta']*100:>+7.1f}%{'':>20}{a['length_change']*100:>+8.1f}%")
    return "\n".join(lines)


def run_compare(args) -> int:
    from l2s import io
    from l2s.eval.metrics import compare

    cmp = compare(_metrics(args.run), _metrics(args.ref))
    print(io.dumps_json(cmp) if args.json else format_comparison(cmp), end="\n" if not args.json else "")
    return 0
