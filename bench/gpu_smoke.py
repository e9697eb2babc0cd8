"""GPU smoke test of the real-scale path: one GPU, under 10 minutes, prints what it measured.

    python bench/gpu_smoke.py [--tokenizers DIR] [--model HUB_ID_OR_DIR] [--problems 200] [--out DIR]

1. **Toy parity**: the micro toy family (trained here, ~1 min on CPU), greedy on the toy test split
   with ``--backend vllm`` and ``--backend hf`` in float32: rows identical (every field), and vLLM's
   throughput.
2. **Stand-in pair** (7B layout, the real tokenizers: ``--tokenizers`` holds ``qwen2.5/`` and
   ``deepseek-r1-distill-qwen/``, else the hub): TIES-merge System 1 and System 2 on the GPU box,
   evaluate the merge with vLLM (bf16, R1 chat template, a context-capped System 1 budget), and
   data-parallel over 2 GPUs when there are 2.
3. **A real model** (``--model``, e.g. ``Qwen/Qwen2.5-Math-1.5B``): greedy decoding of ``--problems``
   GSM8K-style prompts with the qwen25-math-cot prompt and 1,024 new tokens: output tokens per second,
   the figure to compare with vLLM's published ones.

Every step prints one line: what ran, wall seconds, responses, generated tokens, tokens per second,
and the check it made. Exit code 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]


def _timed_eval(**kwargs) -> tuple[Path, float, int]:
    from l2s.eval.run import EvalConfig, evaluate

    t0 = time.perf_counter()
    out = evaluate(EvalConfig(**kwargs), progress=False)
    seconds = time.perf_counter() - t0
    return out, seconds, sum(r["n_tokens"] for r in _rows(out))


def report(step: str, seconds: float, rows: int, tokens: int, check: str, ok: bool) -> bool:
    print(f"{'ok  ' if ok else 'FAIL'} {step:32s} {seconds:7.1f} s  {rows:5d} resp  {tokens:8d} tok  "
          f"{tokens / seconds if seconds else 0:9.0f} tok/s  {check}", flush=True)
    return ok


def toy_parity(work: Path) -> bool:
    from l2s.eval.sampling import SamplingConfig
    from l2s.toy.build import build_family

    family = build_family("micro", cache=work / "cache")
    runs = {}
    for backend in ("hf", "vllm"):
        runs[backend] = _timed_eval(model=str(family["slow"]), datasets=["toy"], out=str(work / f"toy-{backend}"),
                                    prompt="chat", backend=backend, dtype="float32",
                                    sampling=SamplingConfig(max_new_tokens=128))
    (hf, _, _), (vl, seconds, tokens) = runs["hf"], runs["vllm"]
    a, b = _rows(hf), _rows(vl)
    same = sum(x == y for x, y in zip(a, b))
    return report("toy micro slow, vllm vs hf", seconds, len(b), tokens, f"{same}/{len(a)} rows identical",
                  same == len(a))


def standin_merge_eval(work: Path, tokenizers: Path | None, n_gpus: int) -> bool:
    from l2s.eval.sampling import SamplingConfig
    from l2s.merge import MergeConfig, merge
    from l2s.standins import StandinConfig, build_standins

    tok = ({"qwen_tokenizer": str(tokenizers / "qwen2.5"), "r1_tokenizer": str(tokenizers / "deepseek-r1-distill-qwen")}
           if tokenizers else {})
    pair = build_standins(StandinConfig("qwen-7b", **tok), cache=work / "cache")
    t0 = time.perf_counter()
    merged = merge(MergeConfig(method="ties", base=str(pair["quick"]), models=[str(pair["slow"])],
                               params={"k": 0.8, "alpha": 1.0}, out=str(work / "ties"), dtype="bfloat16"))
    ok = report("stand-in 7B TIES merge", time.perf_counter() - t0, 0, 0, str(merged), True)
    data = work / "data" / "gsm8k"
    data.mkdir(parents=True, exist_ok=True)
    (data / "test.jsonl").write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"})
                                             + "\n" for i in range(64)))
    for dp in [1, 2] if n_gpus >= 2 else [1]:
        run, seconds, tokens = _timed_eval(model=str(merged), datasets=["gsm8k"], out=str(work / f"standin-dp{dp}"),
                                           data_dir=str(work / "data"), prompt="qwen25-math-cot", backend="vllm",
                                           dtype="bfloat16", data_parallel_size=dp,
                                           sampling=SamplingConfig(max_new_tokens=256))
        ok &= report(f"stand-in merge, vllm dp={dp}", seconds, len(_rows(run)), tokens, "", True)
    if n_gpus >= 2:
        same = (work / "standin-dp1" / "generations.jsonl").read_bytes() == (
            work / "standin-dp2" / "generations.jsonl").read_bytes()
        ok &= report("dp=2 vs dp=1", 0, 0, 0, "same bytes" if same else "bytes differ", same)
    return ok


def real_model(work: Path, model: str, problems: int) -> bool:
    from l2s.eval.sampling import SamplingConfig

    data = work / "data" / "gsm8k"
    data.mkdir(parents=True, exist_ok=True)
    (data / "test.jsonl").write_text("".join(json.dumps({"question": f"A shop sells {i + 3} pens a day for {i + 2} "
                                                                      f"days. How many pens does it sell?",
                                                         "answer": f"#### {(i + 3) * (i + 2)}"}) + "\n"
                                             for i in range(problems)))
    run, seconds, tokens = _timed_eval(model=model, datasets=["gsm8k"], out=str(work / "real"),
                                       data_dir=str(work / "data"),
                                       prompt="qwen25-math-cot", backend="vllm", dtype="bfloat16",
                                       sampling=SamplingConfig(max_new_tokens=1024))
    rows = _rows(run)
    acc = sum(r["correct"] for r in rows) / len(rows)
    return report(f"{model} greedy", seconds, len(rows), tokens, f"accuracy {acc:.0%}", True)


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizers", type=Path, help="directory with qwen2.5/ and deepseek-r1-distill-qwen/ tokenizers")
    p.add_argument("--model", help="a real checkpoint to time (hub id or directory)")
    p.add_argument("--problems", type=int, default=200)
    p.add_argument("--out", type=Path, help="keep the runs here (default: a temporary directory)")
    args = p.parse_args(argv)
    n_gpus = torch.cuda.device_count()
    import vllm

    print(f"vllm {vllm.__version__}, torch {torch.__version__}, {n_gpus} GPU(s)"
          + (f": {torch.cuda.get_device_name(0)}" if n_gpus else " (vLLM's CPU build)"), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ok = toy_parity(work)
        ok &= standin_merge_eval(work, args.tokenizers, n_gpus)
        if args.model:
            ok &= real_model(work, args.model, args.problems)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
