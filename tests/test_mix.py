"""l2s mix: Ada-R1's seeded GSM8K : MATH : AIME training mix, without MATH500, readable as the dataset ``mix``."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from l2s.cli import main
from l2s.data import load_benchmark
from l2s.mix import MixConfig, build_mix, problem_key, source_counts, write_mix

N_MATH500_COPIES = 5


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def data_dir(shared_data, tmp_path_factory) -> Path:
    """Synthetic train files (MATH's holds a few MATH500 problems, re-spaced) and the real MATH500."""
    root = tmp_path_factory.mktemp("data")
    (root / "math500").mkdir()
    shutil.copy(shared_data / "benchmarks" / "math500" / "test.jsonl", root / "math500" / "test.jsonl")
    m500 = load_benchmark("math500", root)
    _jsonl(root / "gsm8k" / "train.jsonl", [{"question": f"Grade-school problem {i}?", "answer": f"work\n#### {i}"}
                                            for i in range(40)])
    copies = [{"problem": "  " + r["problem"].replace(" ", "\n ", 3), "level": f"Level {r['level']}",
               "type": r["subject"], "solution": f"\\boxed{{{r['answer']}}}"} for r in m500[:N_MATH500_COPIES]]
    own = [{"problem": f"MATH train problem {i}", "level": f"Level {1 + i % 5}", "type": "Algebra",
            "solution": f"so \\boxed{{{i}}}"} for i in range(120)]
    _jsonl(root / "math" / "train.jsonl", own[:60] + copies + own[60:])
    _jsonl(root / "aime_1983_2023" / "train.jsonl",
           [{"ID": f"{y}-{p}", "Year": y, "Problem Number": p, "Question": f"AIME {y} problem {p}", "Answer": p,
             "Part": None} for y in (1990, 2023, 2024) for p in range(1, 16)])
    return root


def test_source_counts_follow_the_ratio():
    assert source_counts(2500, (1, 3, 1)) == [500, 1500, 500]
    assert source_counts(7, (1, 3, 1)) == [2, 4, 1]  # remainders .4 / .2 / .4: the tie goes to the earlier source
    assert source_counts(10, (0, 1, 1)) == [0, 5, 5]
    with pytest.raises(ValueError, match="ratio must be 3 integers"):
        MixConfig(ratio=(1, 3))


def test_mix_counts_no_math500_and_readable_as_a_dataset(data_dir, tmp_path):
    target = write_mix(tmp_path / "out", MixConfig(total=50, data_dir=str(data_dir)))
    assert target == tmp_path / "out" / "mix"
    rows = [json.loads(line) for line in (target / "train.jsonl").read_text().splitlines()]
    assert Counter(r["source"] for r in rows) == {"gsm8k": 10, "math": 30, "aime_1983_2023": 10}
    assert all(r["id"].startswith(f"{r['source']}/") for r in rows) and len({r["id"] for r in rows}) == 50
    assert {r["source"] for r in rows[:10]} != {"gsm8k"}  # shuffled: a prefix is a mix
    m500 = {problem_key(r["problem"]) for r in load_benchmark("math500", data_dir)}
    assert not any(problem_key(r["problem"]) in m500 for r in rows)
    assert not any("AIME 2024" in r["problem"] for r in rows)
    meta = json.loads((target / "mix.json").read_text())
    assert meta["math500_overlap"]["removed_ids"] == [str(i) for i in range(60, 60 + N_MATH500_COPIES)]
    assert meta["sources"]["math"]["rows"] == 125 and meta["sources"]["math"]["usable"] == 120
    assert meta["sources"]["aime_1983_2023"]["rows"] == 30  # 2024 dropped on loading
    assert meta["ids"] == [r["id"] for r in rows] and meta["seed"] == 0 and meta["files"]["train.jsonl"]["rows"] == 50
    assert meta["sources"]["gsm8k"]["from"]["sha256"] and meta["sources"]["gsm8k"]["rows_sha256"]

    loaded = load_benchmark("mix", tmp_path / "out", split="train")
    assert [r["id"] for r in loaded] == meta["ids"]
    assert set(loaded[0]) == {"id", "problem", "answer", "level", "subject"}
    math_row = next(r for r in loaded if r["id"].startswith("math/"))
    assert isinstance(math_row["level"], int) and math_row["subject"] == "Algebra"

    from l2s.prefs.sample import SampleConfig, eval_configs

    ecfg = eval_configs(SampleConfig(long_model="L", short_model="S", out=str(tmp_path / "s"), dataset="mix",
                                     data_dir=str(tmp_path / "out"), limit=5))["long"]
    assert ecfg.datasets == ("mix",) and ecfg.split == "train"
    assert len(load_benchmark("mix", ecfg.data_dir, ecfg.split, ecfg.limit)) == 5


def test_same_inputs_same_bytes_another_seed_another_mix(data_dir, tmp_path):
    cfg = MixConfig(total=25, data_dir=str(data_dir))
    a, b = write_mix(tmp_path / "a", cfg), write_mix(tmp_path / "b", cfg)
    for name in ("train.jsonl", "mix.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    stamp = (a / "mix.json").stat().st_mtime_ns
    assert write_mix(tmp_path / "a", cfg) == a and (a / "mix.json").stat().st_mtime_ns == stamp  # up to date: kept
    other, _ = build_mix(MixConfig(total=25, seed=1, data_dir=str(data_dir)))
    assert [r["id"] for r in other] != json.loads((a / "mix.json").read_text())["ids"]
    with pytest.raises(FileExistsError, match="holds another mix"):
        write_mix(tmp_path / "a", MixConfig(total=25, seed=1, data_dir=str(data_dir)))
    assert main(["mix", "--out", str(tmp_path / "a"), "--total", "25", "--seed", "1", "--data-dir", str(data_dir),
                 "--overwrite"]) == 0
    assert json.loads((a / "mix.json").read_text())["seed"] == 1


def test_too_few_source_rows_is_a_clear_error(data_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"source 'aime_1983_2023' .* has 30 usable problems, fewer than the 40"):
        build_mix(MixConfig(total=200, data_dir=str(data_dir)))
    assert main(["mix", "--out", str(tmp_path), "--total", "200", "--data-dir", str(data_dir)]) == 2
    assert "fewer than the 40" in capsys.readouterr().err and not (tmp_path / "mix").exists()
    assert main(["mix", "--out", str(tmp_path), "--ratio", "1-3-1"]) == 2
    assert "--ratio must be integers joined by ':'" in capsys.readouterr().err
