"""l2s.data: benchmark loaders (local files of the Qwen2.5-Math toolkit, toy splits) and gold extraction."""

import json
import re

import pytest

from l2s.data import DATASETS, last_boxed, load_benchmark, normalize_row

EXPECTED_ROWS = {"gsm8k": 1319, "math500": 500, "minerva_math": 272, "olympiadbench": 675,
                 "college_math": 2818, "aime24": 30, "math": 5000}


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_benchmark_rows(shared_data, name):
    rows = load_benchmark(name, shared_data / "benchmarks")
    assert len(rows) == EXPECTED_ROWS[name]
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"id", "problem", "answer", "level", "subject"}
        assert r["problem"].strip() and r["answer"].strip()
        assert isinstance(r["id"], str)
        assert not re.search(r"(?<!\\)\$", r["answer"]) and "####" not in r["answer"]


def test_gold_answers_as_the_toolkit_takes_them(shared_data):
    b = shared_data / "benchmarks"
    gsm = load_benchmark("gsm8k", b)
    assert gsm[0]["answer"] == "18" and gsm[2]["answer"] == "70000" and gsm[0]["level"] is None
    minerva = load_benchmark("minerva_math", b)
    assert minerva[0]["answer"] == "1.6" and minerva[1]["answer"] == "4.5e33"
    oly = load_benchmark("olympiadbench", b)
    assert oly[1]["answer"] == "\\frac{1}{2 n+2}" and oly[0]["id"] == "1606"
    college = load_benchmark("college_math", b)
    assert college[0]["answer"] == "10-4 n" and college[0]["subject"] == "college_math.algebra"
    m500 = load_benchmark("math500", b)
    assert m500[0]["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)" and m500[0]["level"] == 2
    assert [sum(r["level"] == lv for r in m500) for lv in range(1, 6)] == [43, 90, 105, 128, 134]
    math = load_benchmark("math", b)
    assert [sum(r["level"] == lv for r in math) for lv in range(1, 6)] == [437, 894, 1131, 1214, 1324]
    assert {r["id"]: r["answer"] for r in math if r["id"] in {x["id"] for x in m500}} == \
        {r["id"]: r["answer"] for r in m500}
    assert load_benchmark("aime24", b)[0] == {"id": "60", "problem": load_benchmark("aime24", b)[0]["problem"],
                                              "answer": "204", "level": None, "subject": None}
    assert len(load_benchmark("gsm8k", b, limit=5)) == 5


def test_last_boxed():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\{1,2\\}}") == "\\{1,2\\}"
    assert last_boxed("so \\boxed 5.") == "5."
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("\\boxed{3} and a cut-off \\boxed{\\frac{1") == "3"
    assert last_boxed("no box") is None
    assert last_boxed("\\left\\{ \\boxed{x \\in \\left\\{1\\right.} }") == "x \\in \\left\\{1\\right."


def test_missing_field_names_file_and_field(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "q", "idx": 0}) + "\n")
    with pytest.raises(ValueError, match=r"gsm8k/test.jsonl:1 \(row 0\): missing field 'answer'"):
        load_benchmark("gsm8k", tmp_path)
    (tmp_path / "minerva_math").mkdir()
    (tmp_path / "minerva_math" / "test.jsonl").write_text(json.dumps({"problem": "p", "solution": "no box"}) + "\n")
    with pytest.raises(ValueError, match=r"minerva_math/test.jsonl.*'solution' has no .boxed"):
        load_benchmark("minerva_math", tmp_path)
    with pytest.raises(FileNotFoundError, match="math500/test.jsonl not found"):
        load_benchmark("math500", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'gsm9k'"):
        load_benchmark("gsm9k", tmp_path)
    with pytest.raises(ValueError, match="final_answer"):
        normalize_row("olympiadbench", {"question": "q", "final_answer": []}, 0, "x")


def test_toy_generated_and_from_dir(tmp_path):
    from l2s.toy.data import write_splits

    gen = load_benchmark("toy")
    assert {r["level"] for r in gen} == {1, 2, 3, 4, 5}
    assert load_benchmark("toy") == gen  # deterministic
    write_splits(tmp_path / "toy", {"train": 2, "dev": 2, "test": 3})
    rows = load_benchmark("toy", tmp_path, split="dev")
    assert len(rows) == 10 and rows[0]["id"].startswith("toy-dev-L1")
    assert set(rows[0]) == {"id", "problem", "answer", "level", "subject"}
    assert "toy" in DATASETS


def _write(root, name, split, rows):
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_train_splits_from_local_files_in_the_hub_formats(tmp_path):
    _write(tmp_path, "gsm8k", "train", [{"question": "q0", "answer": "a\n#### 1,234"},
                                        {"question": "q1", "answer": "#### 7"}])
    gsm = load_benchmark("gsm8k", tmp_path, split="train")
    assert [(r["id"], r["answer"]) for r in gsm] == [("0", "1234"), ("1", "7")]
    _write(tmp_path, "math", "train", [
        {"problem": "p0", "level": "Level 3", "type": "Algebra", "solution": "so \\boxed{\\frac{1}{2}}."},
        {"problem": "p1", "level": "Level ?", "type": "Geometry", "solution": "\\boxed{3}",
         "unique_id": "train/geometry/5.json"}])
    math = load_benchmark("math", tmp_path, split="train")
    assert math[0] == {"id": "0", "problem": "p0", "answer": "\\frac{1}{2}", "level": 3, "subject": "Algebra"}
    assert (math[1]["id"], math[1]["level"]) == ("train/geometry/5.json", None)
    _write(tmp_path, "aime_1983_2023", "train", [
        {"ID": "1983-1", "Year": 1983, "Problem Number": 1, "Question": "first", "Answer": 60, "Part": None},
        {"ID": "2023-II-15", "Year": 2023, "Problem Number": 15, "Question": "last", "Answer": "023", "Part": "II"},
        {"ID": "2024-II-1", "Year": 2024, "Problem Number": 1, "Question": "a test problem", "Answer": 1, "Part": "II"},
        {"id": "x", "year": "2025", "problem": "another test problem", "answer": "5"},
        {"year": 2001, "problem": "lower-case columns", "answer": 17}])
    aime = load_benchmark("aime_1983_2023", tmp_path, split="train")
    assert [(r["id"], r["problem"], r["answer"]) for r in aime] == [
        ("1983-1", "first", "60"), ("2023-II-15", "last", "023"), ("4", "lower-case columns", "17")]
    assert all(r["level"] is None and r["subject"] is None for r in aime)
    _write(tmp_path, "aime_1983_2023", "train", [{"ID": "1", "Question": "q", "Answer": 1}])
    with pytest.raises(ValueError, match=r"aime_1983_2023/train.jsonl:1 \(row 0\): missing field 'Year' or 'year'"):
        load_benchmark("aime_1983_2023", tmp_path, split="train")


def test_mix_is_read_from_its_file_only(tmp_path):
    _write(tmp_path, "mix", "train", [{"id": "math/3", "problem": "p", "answer": "2", "level": 4,
                                       "subject": "Algebra", "source": "math"},
                                      {"id": "gsm8k/1", "problem": "q", "answer": "5", "level": None,
                                       "subject": None, "source": "gsm8k"}])
    rows = load_benchmark("mix", tmp_path, split="train")
    assert rows[0] == {"id": "math/3", "problem": "p", "answer": "2", "level": 4, "subject": "Algebra"}
    assert "mix" in DATASETS and "aime_1983_2023" in DATASETS
    with pytest.raises(ValueError, match="has no hub copy: build it with `l2s mix"):
        load_benchmark("mix", split="train")
    with pytest.raises(FileNotFoundError, match="build it with `l2s mix --out DIR`"):
        load_benchmark("mix", tmp_path / "elsewhere", split="train")
    with pytest.raises(ValueError, match=r"'aime_1983_2023': the hub serves split\(s\) \['train'\] only"):
        load_benchmark("aime_1983_2023")
    with pytest.raises(ValueError, match=r"'math500': the hub serves split\(s\) \['test'\] only, got 'train'"):
        load_benchmark("math500", split="train")


def test_train_splits_from_the_hub(monkeypatch):
    """The hub path, with ``datasets.load_dataset`` answering from memory: ids for MATH, AIME after 2023 dropped."""
    import datasets

    from l2s.data import HUB_TRAIN_SOURCES, MATH_SUBJECTS

    calls = []

    def fake_load(repo, config=None, split=None, **kw):
        calls.append((repo, config, split))
        if repo == "openai/gsm8k":
            return [{"question": "q", "answer": "#### 3"}]
        if repo == "EleutherAI/hendrycks_math":
            return [{"problem": f"{config} {i}", "level": "Level 1", "type": config, "solution": f"\\boxed{{{i}}}"}
                    for i in range(2)]
        return [{"ID": "2023-I-1", "Year": 2023, "Problem Number": 1, "Question": "old", "Answer": 7, "Part": "I"},
                {"ID": "2024-II-1", "Year": 2024, "Problem Number": 1, "Question": "new", "Answer": 8, "Part": "II"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert load_benchmark("gsm8k", split="train")[0]["answer"] == "3"
    math = load_benchmark("math", split="train")
    assert len(math) == 2 * len(MATH_SUBJECTS) and math[1]["id"] == "train/algebra/1" and math[1]["answer"] == "1"
    assert [r["id"] for r in load_benchmark("aime_1983_2023", split="train")] == ["2023-I-1"]
    assert calls[0] == ("openai/gsm8k", "main", "train") and calls[-1] == HUB_TRAIN_SOURCES["aime_1983_2023"][0][:3]
