"""``l2s short-cot``: the short-CoT solutions Ada-R1's short model is fine-tuned on, as SFT rows.

Luo et al. (2025, Sec. 4.1) get their short-CoT model by fine-tuning the long model
(DeepSeek-R1-Distill-Qwen) on 2,000 short-CoT solutions written in the long model's chat template, so
that the long and short models they merge share one template. Where the solutions come from is a
short-CoT model; the authors' SFT file (``LLaMA-Factory-YAMLs/ds-7b-short-sft.yaml``, StarDewXXX/AdaR1)
names its data ``Qwen2.5-32B-Instruct_mix_mathematic_problems_ds-format``: Qwen2.5-32B-Instruct's
solutions to their training mix (see :mod:`l2s.mix`); Qwen2.5-Math-7B-Instruct is the usual 7B choice.
Two ways in:

- **generate** (``source_model``): the source model answers a problem set (default: the ``mix``,
  split ``train``) in an ordinary, resumable evaluation run ``<out>/generate``
  (:func:`l2s.eval.run.evaluate`; default greedy, one response, 2,048 new tokens, the source model's
  own chat template with the Qwen2.5-Math system prompt). A response is kept if it is graded correct
  and ended by itself (not cut at the token limit); per problem the shortest one (in the source model's
  tokens; ties: the lowest sample index) is kept;
- **file** (``solutions``): a JSONL of ``{problem, solution}`` rows (optional ``id``), taken as correct;
  per problem the shortest solution (in the long model's tokens; ties: the first) is kept.

Problems are matched on their text with whitespace collapsed (the same problem under two ids counts
once). If more than ``n`` (2,000) remain, ``n`` are drawn with ``random.Random(seed)`` and kept in input
order. Each is written as a prompt/completion row in the long model's format: the prompt is exactly what
``l2s sample`` sends the long and the short model (:func:`l2s.eval.prompts.build_prompt` with ``prompt``,
default ``qwen25-math-cot``, over the long model's tokenizer: R1's
``<｜begin▁of▁sentence｜>{system}<｜User｜>{q}<｜Assistant｜><think>\\n``), the completion is the solution,
then the template's end of turn (R1: ``<｜end▁of▁sentence｜>``; the eos is appended if that does not end
with it). The solution is written as is, right after the generation prompt: no ``</think>`` is added.

Output in ``out``: ``sft.jsonl`` (rows ``{id, problem, solution, prompt, completion, n_tokens}`` plus
``dataset`` when generated; ``n_tokens`` = completion tokens of the long tokenizer), the input of
``l2s sft``; and ``short_cot.json`` (config, source and its hashes, the counts at each step, the ids
kept, the file's SHA-256, provenance). ``sft.jsonl`` is the same bytes for the same inputs. A rerun
with the same config resumes the generation and rewrites the files; another config needs ``overwrite``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2s import io
from l2s.mix import problem_key

log = logging.getLogger(__name__)

ROWS, MANIFEST, GENERATE = "sft.jsonl", "short_cot.json", "generate"


@dataclass
class ShortCoTConfig:
    """Where the short solutions come from (``solutions`` xor ``source_model``) and how they are formatted."""

    long_model: str
    out: str
    n: int = 2000
    prompt: str = "qwen25-math-cot"  # the long model's prompt, as in l2s sample / AdaR1Config.prompt
    seed: int = 0
    solutions: str | None = None
    source_model: str | None = None
    dataset: str = "mix"
    split: str = "train"
    data_dir: str | None = None
    limit: int | None = None
    source_prompt: str = "qwen25-math-cot"
    k: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 2048
    backend: str = "auto"
    batch_size: int = 16
    tensor_parallel_size: int = 1
    max_model_len: int | None = None

    def __post_init__(self) -> None:
        from l2s.eval.prompts import PROMPTS

        if (self.solutions is None) == (self.source_model is None):
            raise ValueError("give exactly one of solutions (a JSONL of {problem, solution}) and source_model "
                             "(a short-CoT model to generate them)")
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be an integer >= 1, got {self.n!r}")
        for name in ("prompt", "source_prompt"):
            if getattr(self, name) not in PROMPTS:
                raise ValueError(f"{name} must be one of {', '.join(PROMPTS)}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def keep_shortest(candidates: list[dict], n: int, seed: int) -> list[dict]:
    """One candidate per problem text (the smallest ``n_tokens``; ties: the earliest), then at most ``n``
    of them, drawn with ``random.Random(seed)`` and kept in input order."""
    best: dict[str, tuple[int, dict]] = {}
    for i, c in enumerate(candidates):
        key = problem_key(c["problem"])
        if key not in best or c["n_tokens"] < best[key][1]["n_tokens"]:
            best[key] = (i, c)
    kept = [c for _, c in sorted(best.values(), key=lambda t: t[0])]
    if len(kept) > n:
        picked = set(random.Random(seed).sample(range(len(kept)), n))
        kept = [c for i, c in enumerate(kept) if i in picked]
    return kept


def correct_responses(generations: list[dict], problems: dict[tuple[str, str], str]) -> list[dict]:
    """The generation rows graded correct that ended by themselves, as ``{id, dataset, problem, solution,
    n_tokens}`` in the run's order (dataset, problem, sample); ``problems`` maps (dataset, id) to the text."""
    return [{"id": str(r["id"]), "dataset": r["dataset"], "problem": problems[(r["dataset"], str(r["id"]))],
             "solution": r["response"].strip(), "n_tokens": r["n_tokens"]}
            for r in generations if r.get("correct") and r.get("finished") and not r.get("truncated")
            and r["response"].strip()]


def read_solutions(path: str | Path) -> list[dict]:
    """Rows ``{id, problem, solution}`` of a solutions JSONL, checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"solutions file {path} not found (a JSONL of {{problem, solution}} rows)")
    out = []
    for i, row in enumerate(io.read_jsonl(path)):
        for name in ("problem", "solution"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise ValueError(f"{path} (row {i}): field {name!r} must be a non-empty string (row has {sorted(row)})")
        out.append({"id": str(row.get("id", i)), "problem": row["problem"], "solution": row["solution"].strip()})
    if not out:
        raise ValueError(f"{path}: no rows")
    return out


def sft_row(tokenizer, prompt_name: str, chosen: dict) -> dict:
    """``chosen`` as an SFT row in the long model's format (see the module docstring)."""
    from l2s.eval.prompts import build_prompt
    from l2s.sft import turn_end

    completion = chosen["solution"] + turn_end(tokenizer)
    if tokenizer.eos_token and not completion.endswith(tokenizer.eos_token):
        completion += tokenizer.eos_token
    row = {k: chosen[k] for k in ("id", "dataset", "problem", "solution") if k in chosen}
    return {**row, "prompt": build_prompt(prompt_name, chosen["problem"], tokenizer), "completion": completion,
            "n_tokens": len(tokenizer(completion, add_special_tokens=False)["input_ids"])}


def generate_candidates(cfg: ShortCoTConfig, backend=None, progress: bool = True) -> tuple[list[dict], dict]:
    """Run (or resume) the source model's evaluation in ``<out>/generate``; its correct responses and a
    description of the run."""
    from l2s.data import load_benchmark
    from l2s.eval.run import GENERATIONS, EvalConfig, evaluate
    from l2s.eval.sampling import SamplingConfig
    from l2s.provenance import file_sha256

    sampling = SamplingConfig(n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
                              max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    ecfg = EvalConfig(model=cfg.source_model, datasets=(cfg.dataset,), out=str(Path(cfg.out) / GENERATE),
                      data_dir=cfg.data_dir, split=cfg.split, limit=cfg.limit, prompt=cfg.source_prompt,
                      sampling=sampling, backend=cfg.backend, batch_size=cfg.batch_size,
                      tensor_parallel_size=cfg.tensor_parallel_size, max_model_len=cfg.max_model_len,
                      tags={"stage": "short-cot"})
    run = Path(evaluate(ecfg, backend=backend, progress=progress))
    problems = {(cfg.dataset, r["id"]): r["problem"]
                for r in load_benchmark(cfg.dataset, cfg.data_dir, cfg.split, cfg.limit)}
    generations = io.read_jsonl(run / GENERATIONS)
    correct = correct_responses(generations, problems)
    source = {"mode": "generate", "model": cfg.source_model, "run": str(run),
              "sha256:generations.jsonl": file_sha256(run / GENERATIONS), "problems": len(problems),
              "responses": len(generations), "correct": sum(bool(r.get("correct")) for r in generations),
              "correct_and_finished": len(correct)}
    if not correct:
        raise ValueError(f"no correct, finished response among the {len(generations)} responses of "
                         f"{cfg.source_model} in {run}: check its generations (prompt, max_new_tokens) or pass "
                         "a better short-CoT source model")
    return correct, source


def build_short_cot(cfg: ShortCoTConfig, overwrite: bool = False, backend=None, progress: bool = True) -> Path:
    """Write ``sft.jsonl`` and ``short_cot.json`` into ``cfg.out`` (see the module docstring)."""
    from l2s.provenance import file_sha256, provenance
    from l2s.tokenizers import load_tokenizer

    out = Path(cfg.out)
    if (out / MANIFEST).is_file() and io.read_json(out / MANIFEST).get("config") != cfg.to_dict():
        if not overwrite:
            raise FileExistsError(f"{out} holds short-CoT data made with another config; pass --overwrite to "
                                  "replace it (the generation run too), or choose another --out")
        shutil.rmtree(out)
    if cfg.solutions is not None:
        candidates = read_solutions(cfg.solutions)
        source = {"mode": "file", "path": str(cfg.solutions), "sha256": file_sha256(cfg.solutions),
                  "rows": len(candidates)}
    else:
        candidates, source = generate_candidates(cfg, backend=backend, progress=progress)
    try:
        tokenizer = load_tokenizer(cfg.long_model)
    except OSError as e:
        raise FileNotFoundError(f"cannot load the tokenizer of the long model {cfg.long_model}: {e}") from e
    if cfg.solutions is not None:  # the shortest of a file's solutions: in the long model's tokens
        candidates = [{**c, "n_tokens": len(tokenizer(c["solution"], add_special_tokens=False)["input_ids"])}
                      for c in candidates]
    chosen = keep_shortest(candidates, cfg.n, cfg.seed)
    if len(chosen) < cfg.n:
        log.warning("short-CoT: only %d problems have a usable solution, fewer than n=%d", len(chosen), cfg.n)
    rows = [sft_row(tokenizer, cfg.prompt, c) for c in chosen]
    io.write_jsonl(out / ROWS, rows)
    template = getattr(tokenizer, "chat_template", None) or ""
    manifest = {
        "kind": "short-cot", "config": cfg.to_dict(), "source": source,
        "long_model": {"path": cfg.long_model, "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest()},
        "format": {"prompt": cfg.prompt, "completion": "solution + chat template end of turn (+ eos)"},
        "counts": {"candidates": len(candidates), "problems": len({problem_key(c["problem"]) for c in candidates}),
                   "kept": len(rows), "n": cfg.n},
        "ids": [r["id"] for r in rows],
        "files": {ROWS: {"rows": len(rows), "sha256": file_sha256(out / ROWS)}},
        "provenance": provenance(seed=cfg.seed),
    }
    io.atomic_write_json(out / MANIFEST, manifest)
    log.info("short-CoT: %d rows -> %s", len(rows), out / ROWS)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("short-cot", help="short-CoT solutions as SFT rows in the long model's chat format (Ada-R1)",
                       description="Build the short-CoT SFT data of Ada-R1's short model: generate with a short-CoT "
                                   "--source-model on a problem set (keep correct, shortest per problem) or take "
                                   "--solutions FILE; cap at --n; write OUT/sft.jsonl (input of `l2s sft`) and "
                                   "OUT/short_cot.json. Options override --config.")
    p.add_argument("--long-model", help="the long model (its tokenizer and chat template format the rows)")
    p.add_argument("--out", help="output directory (rerun to resume the generation)")
    p.add_argument("--config", type=Path, help="JSON/YAML file of ShortCoTConfig options")
    p.add_argument("--n", type=int, help="at most this many solutions (default 2000)")
    p.add_argument("--prompt", help="the long model's prompt (default qwen25-math-cot; as in l2s sample)")
    p.add_argument("--seed", type=int)
    p.add_argument("--solutions", help="JSONL of {problem, solution} rows (instead of --source-model)")
    p.add_argument("--source-model", help="short-CoT model to generate with, e.g. Qwen/Qwen2.5-Math-7B-Instruct")
    p.add_argument("--dataset", help="problems to generate on (default mix)")
    p.add_argument("--split", help="default train")
    p.add_argument("--data-dir", help="directory of <dataset>/<split>.jsonl (the mix: the --out of `l2s mix`)")
    p.add_argument("--limit", type=int, help="first N problems")
    p.add_argument("--source-prompt", help="the source model's prompt (default qwen25-math-cot)")
    p.add_argument("--k", type=int, help="responses per problem (default 1, greedy)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--max-new-tokens", type=int, help="default 2048")
    p.add_argument("--backend", choices=["auto", "vllm", "hf"])
    p.add_argument("--batch-size", type=int)
    p.add_argument("--tensor-parallel-size", type=int)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--overwrite", action="store_true", help="replace an --out made with another config")
    p.set_defaults(func=run_short_cot)


def run_short_cot(args) -> int:
    from l2s.cli import UserError
    from l2s.config import options_from_args, parse, where_of

    options = options_from_args(ShortCoTConfig, args)
    for required, flag in (("long_model", "--long-model"), ("out", "--out")):
        if not options.get(required):
            raise UserError(f"{flag} is required (or set {required} in --config)")
    cfg = parse(ShortCoTConfig, options, where_of(args))
    print(build_short_cot(cfg, overwrite=args.overwrite))
    return 0
