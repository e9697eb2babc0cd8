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
    from l2s.config import add_flags

    e = sub.add_parser("eval", help="generate, grade and measure a model on benchmarks",
                       description="Generate responses (vLLM or transformers), grade them with math-verify "
                                   "and write a resumable run directory. Flags override --config.")
    e.add_argument("--datasets", help="comma-separated: gsm8k,math500,minerva_math,olympiadbench,"
                                      "college_math,aime24,aime25,math,toy")
    e.add_argument("--config", type=Path, help="JSON or YAML file of EvalConfig fields; flags override it")
    e.add_argument("--tag", action="append", type=_tag, default=[], metavar="KEY=VALUE",
                   help="free-form label saved in config.json 'tags' (repeatable; JSON values parsed)")
    e.add_argument("--grading-timeout", type=float, help="seconds per answer (grading.timeout_s)")
    e.add_argument("--truncation-policy", choices=["wrong", "grade"], help="grading.truncation_policy")
    add_flags(e, "l2s.eval.run:EvalConfig", (
        "model", "data_dir", "split", "prompt", "exemplars", "tokenizer", "backend", "batch_size",
        "tensor_parallel_size", "data_parallel_size", "dtype", "max_model_len", "gpu_memory_utilization", "out",
        "limit"), choices={"prompt": list(PROMPTS), "backend": ["auto", "vllm", "hf"]}, help={
        "model": "model directory or hub id",
        "data_dir": "directory of <dataset>/<split>.jsonl (default: the hub; toy: generated)",
        "split": "split (default test)", "exemplars": "cot exemplars (JSON list or JSONL of {question, answer})",
        "tokenizer": "tokenizer directory (default: the model's)", "batch_size": "hf backend batch size",
        "tensor_parallel_size": "vllm: GPUs per model",
        "data_parallel_size": "vllm: worker processes, each on its own --tensor-parallel-size GPUs (default 1)",
        "max_model_len": "context for prompt + response (default: the model's max_position_embeddings); "
                         "longer budgets are capped and recorded",
        "gpu_memory_utilization": "vllm: share of GPU memory (default 0.9)",
        "out": "run directory, e.g. runs/NAME (rerun to resume)", "limit": "first N problems of each dataset"})
    add_flags(e, "l2s.eval.sampling:SamplingConfig", ("max_new_tokens", "temperature", "top_p", "top_k", "n", "seed"),
              help={"n": "samples per problem", "temperature": "0 = greedy (default)", "top_k": "-1 = off"})
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


def eval_config_from_args(args):
    """The ``--config`` file's EvalConfig fields, overridden by the flags given (sampling and grading flags
    go to ``sampling`` and ``grading``, ``--tag`` adds to ``tags``)."""
    from l2s.cli import UserError
    from l2s.config import given, merge, options_from_args, where_of
    from l2s.eval.run import EvalConfig
    from l2s.eval.sampling import SamplingConfig

    d = options_from_args(EvalConfig, args)
    if isinstance(args.datasets, str):  # comma-separated on the command line
        d["datasets"] = [x.strip() for x in args.datasets.split(",") if x.strip()]
    grading = {k: v for k, v in (("timeout_s", args.grading_timeout), ("truncation_policy", args.truncation_policy))
               if v is not None}
    nested = {"sampling": given(SamplingConfig, args), "grading": grading, "tags": dict(args.tag)}
    d = merge(d, {k: v for k, v in nested.items() if v})
    for required in ("model", "datasets", "out"):
        if not d.get(required):
            raise UserError(f"--{required} is required (or set it in --config)")
    return EvalConfig.from_dict(d, where_of(args))


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
    """The metrics of a run directory or metrics.json, checked for what :func:`compare` reads."""
    from l2s.runs import read_metrics

    return read_metrics(path, required=("accuracy", "mean_tokens"))


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
