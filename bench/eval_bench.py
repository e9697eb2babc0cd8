"""Evaluation benchmarks (issue 5).

1. Generation: tokens/s of the hf backend (batched, left-padded, KV-cached, sorted by length) vs
   one-prompt-at-a-time ``model.generate`` on a tiny random Qwen2 with the toy tokenizer. Goal >= 5x.
2. Grading: all saved R1-Distill / QwQ responses in ../shared/data/real_outputs graded with the
   process pool (truncated = re-encoded to >= 2000 tokens, the cap they were generated with). Goal < 60 s.

    OMP_NUM_THREADS=1 python bench/eval_bench.py [--prompts 64] [--max-new-tokens 64] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("L2S_SHARED_DATA", REPO.parent / "shared" / "data"))


def bench_generation(n_prompts: int, max_new_tokens: int, batch_size: int) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from l2s.data import load_benchmark
    from l2s.eval.backends import Request
    from l2s.eval.backends.hf import HFBackend
    from l2s.eval.prompts import build_prompt
    from l2s.eval.sampling import SamplingConfig
    from l2s.toy.tokenizer import build_tokenizer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(cfg)
    rows = load_benchmark("toy")[:n_prompts]
    reqs = [Request(("toy", r["id"], 0), build_prompt("chat", r["problem"], tok)) for r in rows]
    sampling = SamplingConfig(max_new_tokens=max_new_tokens)
    out = {}
    for name, bs in (("batched", batch_size), ("one_at_a_time", 1)):
        backend = HFBackend.from_objects(model, tok, batch_size=bs)
        t = time.perf_counter()
        gens = [g for batch in backend.generate(reqs, sampling, progress=False) for _, g in batch]
        dt = time.perf_counter() - t
        n_tok = sum(len(g.token_ids) for g in gens)
        out[name] = {"seconds": round(dt, 3), "tokens": n_tok, "tokens_per_s": round(n_tok / dt, 1),
                     "batch_size": bs}
    out["speedup"] = round(out["batched"]["tokens_per_s"] / out["one_at_a_time"]["tokens_per_s"], 2)
    out.update(prompts=n_prompts, max_new_tokens=max_new_tokens, torch_threads=torch.get_num_threads())
    return out


def bench_grading(workers: int | None, string_fast_path: bool = True) -> dict:
    from transformers import AutoTokenizer

    from l2s.eval.grading import GradeConfig, Grader
    from l2s.eval.measures import count_tokens

    ro = SHARED / "real_outputs"
    if not ro.is_dir():
        return {"skipped": f"{ro} not found"}
    toks = {"r1": AutoTokenizer.from_pretrained(SHARED / "tokenizers" / "deepseek-r1-distill-qwen"),
            "qwen": AutoTokenizer.from_pretrained(SHARED / "tokenizers" / "qwen2.5")}
    items = []
    for f in sorted(ro.glob("benchmark_results_*.json")):
        data = json.loads(f.read_text())
        tok = toks["r1"] if "DeepSeek-R1" in data["metadata"]["thinking_model"] else toks["qwen"]
        responses = [t["model_answers"]["thinking_model"] for t in data["tasks"]]
        lengths = count_tokens(tok, responses)
        # GSM8K files hold the worked solution as correct_answer: the gold is after "####" (as l2s.data).
        golds = [t["correct_answer"].split("####")[-1].strip().replace(",", "") if "####" in t["correct_answer"]
                 else str(t["correct_answer"]) for t in data["tasks"]]
        items += [(r, gold, n >= 2000) for r, gold, n in zip(responses, golds, lengths)]
    t = time.perf_counter()
    with Grader(GradeConfig(workers=workers, string_fast_path=string_fast_path)) as grader:
        grades = grader.grade(items, progress=True)
    dt = time.perf_counter() - t
    statuses: dict[str, int] = {}
    for g in grades:
        statuses[g.status] = statuses.get(g.status, 0) + 1
    return {"responses": len(items), "seconds": round(dt, 2), "responses_per_s": round(len(items) / dt, 1),
            "workers": grader._workers(), "string_fast_path": string_fast_path,
            "accuracy": round(sum(g.correct for g in grades) / len(grades), 4),
            "truncated": sum(i[2] for i in items), "statuses": statuses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="grading processes (default: cpu count)")
    ap.add_argument("--skip-generation", action="store_true")
    ap.add_argument("--no-string-fast-path", action="store_true",
                    help="send every answer through sympy (worst case)")
    ap.add_argument("--skip-grading", action="store_true")
    args = ap.parse_args()
    result = {"cpu_count": os.cpu_count()}
    if not args.skip_generation:
        result["generation"] = bench_generation(args.prompts, args.max_new_tokens, args.batch_size)
        print(json.dumps(result["generation"], indent=2), flush=True)
    if not args.skip_grading:
        result["grading"] = bench_grading(args.workers, not args.no_string_fast_path)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
