"""Ada-R1 on the real models' layout, on CPU: ``run_adar1`` on the 7B stand-ins (l2s.standins).

System 2 (the long model) is the R1-Distill-Qwen-7B stand-in: the real R1 tokenizer, R1's chat template
(``<｜begin▁of▁sentence｜>{system}<｜User｜>{q}<｜Assistant｜><think>\\n``), 152,064 vocabulary rows,
131,072 positions. The short model is a second stand-in seed of it (same layout, other weights), as the
paper's short-CoT model is the long one fine-tuned. K = 2, four gsm8k-style problems, a few new tokens
and the toy DPO preset: every stage runs end to end with R1 prompts, and the pairs' prompts are the R1
chats the rows recorded. The weights are random, so no answer is ever right: grading is replaced by a
fixed rule on the response's hash, which gives both models right and wrong samples.

Also: Wu et al.'s s1K DPO pairs rendered by R1's template, and ``l2s dpo --preset wu-dpo`` training on
them. Skipped without the shared tokenizers (``shared_data``).
"""

import hashlib

import pytest

from l2s import io
from l2s.adar1 import AdaR1Config, run_adar1
from l2s.cli import main
from l2s.eval.grading import Grade, Grader
from l2s.eval.prompts import QWEN25_MATH_SYSTEM
from l2s.standins import StandinConfig, build_standins

K, SAMPLE_MAX, EVAL_MAX = 2, 8, 6
VARIANTS = ("bilevel", "shortest_vs_longest")
QUESTIONS = ["Tom has 3 apples and buys 4 more. How many apples does he have?", "What is 10 minus 2?",
             "A box holds 6 eggs. How many eggs are in 2 boxes?", "What is 9 plus 5?"]
ANSWERS = ["7", "8", "12", "14"]
R1_BOS, R1_GEN = "<｜begin▁of▁sentence｜>", "<｜Assistant｜><think>\n"
pytestmark = pytest.mark.slow  # a whole pipeline: minutes on two CPU cores (the DPO steps over 152k vocabulary rows)


def _hash_rule(self, items, progress=False, desc="grading"):
    """Grades by a fixed rule (the response's SHA-256 is even): the random stand-ins never answer right."""
    return [Grade(None, int(hashlib.sha256(text.encode()).hexdigest(), 16) % 2 == 0, "test-rule")
            for text, _, _ in items]


@pytest.fixture(scope="module")
def standins(shared_data, tmp_path_factory):
    tok = shared_data / "tokenizers"
    cache = tmp_path_factory.mktemp("standins")
    return [build_standins(StandinConfig("qwen-7b", qwen_tokenizer=str(tok / "qwen2.5"),
                                         r1_tokenizer=str(tok / "deepseek-r1-distill-qwen"), seed=seed),
                           cache=cache)["slow"] for seed in (0, 1)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rows = [{"question": q, "answer": f"The answer.\n#### {a}"} for q, a in zip(QUESTIONS, ANSWERS)]
    io.write_jsonl(root / "gsm8k" / "train.jsonl", rows)
    io.write_jsonl(root / "gsm8k" / "test.jsonl", rows[:2])
    return root


@pytest.fixture(scope="module")
def result(standins, data_dir, tmp_path_factory):
    cache, out = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("adar1") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("L2S_CACHE", str(cache))
        mp.setattr(Grader, "grade", _hash_rule)
        cfg = AdaR1Config(long_model=str(standins[0]), short_model=str(standins[1]), out=str(out), k=K,
                          train_dataset="gsm8k", data_dir=str(data_dir), prompt="qwen25-math-cot",
                          eval_datasets=("gsm8k",), sample_max_new_tokens=SAMPLE_MAX, eval_max_new_tokens=EVAL_MAX,
                          dpo_preset="toy", variants=VARIANTS, tags={"size": "7b-standin"})
        return run_adar1(cfg)


def test_runs_end_to_end_with_r1_prompts(result):
    assert set(result["stages"].values()) == {"ran"}
    for run in result["sample_runs"].values():
        rows = io.read_jsonl(run / "generations.jsonl")
        assert len(rows) == len(QUESTIONS) * K
        for r in rows:
            assert r["messages"] == [{"role": "system", "content": QWEN25_MATH_SYSTEM},
                                     {"role": "user", "content": r["messages"][1]["content"]}]
            assert r["prompt"] == f"{R1_BOS}{QWEN25_MATH_SYSTEM}<｜User｜>{r['messages'][1]['content']}{R1_GEN}"
            assert r["n_tokens"] <= SAMPLE_MAX
        assert io.read_json(run / "config.json")["sampling"]["max_new_tokens"] == SAMPLE_MAX
    for variant in VARIANTS:
        card = io.read_json(result["models"][variant] / "l2s_train.json")
        assert card["method"] == "dpo"
        assert card["pairs"]["path"] == str(result["pairs"][variant])
    for run in result["eval_runs"].values():
        assert io.read_json(run / "config.json")["sampling"]["max_new_tokens"] == EVAL_MAX
        assert io.read_json(run / "metrics.json")["datasets"]["gsm8k"]["n"] == 2
    assert set(result["eval_runs"]) == {"long", "merge", *VARIANTS}


def test_pairs_prompts_are_the_rows_r1_chats(result):
    rows = {r["id"]: r for r in io.read_jsonl(result["sample_runs"]["long"] / "generations.jsonl")}
    for variant in VARIANTS:
        records = io.read_jsonl(result["pairs"][variant] / "pairs.jsonl")
        assert records, variant
        for r in records:
            assert r["prompt"] == rows[r["id"]]["messages"]           # R1's chat, from the rows
            assert r["prompt_text"] == rows[r["id"]]["prompt"] and r["prompt_text"].startswith(R1_BOS)
        config = io.read_json(result["pairs"][variant] / "config.json")
        assert config["prompt_format"] == "conversational"
        assert config["inputs"]["tokenizer"] == {"path": str(result["merged"])}
    baseline = io.read_jsonl(result["pairs"]["shortest_vs_longest"] / "pairs.jsonl")
    assert io.read_json(result["pairs"]["shortest_vs_longest"] / "config.json")["pairs"]["baseline_source"] == "pooled"
    assert {r["chosen_style"] for r in baseline} <= {"long", "short"}


def test_summary_states_limits_pair_counts_and_warnings(result):
    summary = io.read_json(result["out"] / "summary.json")
    assert summary["token_limits"] == io.read_json(result["record"])["token_limits"] == {"sample": SAMPLE_MAX,
                                                                                         "eval": EVAL_MAX}
    for name, limit in summary["token_limit"].items():
        rows = io.read_jsonl(result["out"] / name / "generations.jsonl")
        want = SAMPLE_MAX if name.startswith("sample") else EVAL_MAX
        assert limit["max_new_tokens"] == want and limit["hit_limit"] == sum(r["truncated"] for r in rows)
    assert summary["token_limit"]["sample-long"]["hit_limit"] > 0      # random weights: no eos in 8 tokens
    for variant in VARIANTS:
        overview = summary["pairs"][variant]
        assert overview["n_rows"] == len(io.read_jsonl(result["pairs"][variant] / "pairs.jsonl")) > 0
        assert overview["n_problems"] == len(QUESTIONS)
    # R1's template keeps only what follows </think> of an assistant turn: the run says that TRL's DPO
    # would not train on the sampled reasoning (l2s.prefs.template)
    assert any("rewrites the assistant turn" in w for w in summary["warnings"])
    assert any("not a prefix" in w for w in summary["warnings"])


def test_s1k_pairs_with_r1s_template_train_with_the_wu_dpo_preset(standins, tmp_path, monkeypatch):
    from pathlib import Path

    from l2s.merge.s1k import write_s1k_calibration

    fixture = Path(__file__).parent / "data" / "s1k-sample.jsonl"
    write_s1k_calibration(tmp_path / "cal", n=4, seed=0, source=fixture)
    out = tmp_path / "pairs-wu-dpo"
    assert main(["pairs", "s1k", "--calibration-dir", str(tmp_path / "cal"), "--tokenizer", str(standins[0]),
                 "--out", str(out)]) == 0
    records = io.read_jsonl(out / "pairs.jsonl")
    assert all(r["prompt_text"] == f"{R1_BOS}{QWEN25_MATH_SYSTEM}<｜User｜>{r['prompt'][1]['content']}{R1_GEN}"
               for r in records)
    summary = io.read_json(out / "summary.json")
    assert summary["n_rows"] == 4 and any("not a prefix" in w for w in summary["warnings"])
    monkeypatch.setenv("L2S_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "wu-dpo"
    assert main(["dpo", "--model", str(standins[0]), "--pairs", str(out), "--preset", "wu-dpo", "--out", str(ckpt),
                 "--max-steps", "1", "--effective-batch-size", "1", "--per-device-train-batch-size", "1"]) == 0
    card = io.read_json(ckpt / "l2s_train.json")
    assert card["method"] == "dpo" and card["config"]["preset"] == "wu-dpo"
    assert card["pairs"]["path"] == str(out)
