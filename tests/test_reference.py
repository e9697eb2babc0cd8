"""The papers' published numbers load as tidy, labelled frames (values typed from the CSVs)."""

import pytest

from l2s import reference, runs


def _one(df, **where):
    for k, v in where.items():
        df = df[df[k] == v]
    assert len(df) == 1, where
    return df.iloc[0]


def test_wu_tables_1_to_4():
    df = reference.wu2025_merging()
    r = _one(df, table="Table 1", method="ties", dataset="math500")
    assert (r["size"], r["model"], r["role"]) == ("7B", "ties_merging", "merged")
    assert r["accuracy"] == pytest.approx(81.8) and r["mean_tokens"] == pytest.approx(1492.9)
    assert r["label"] == "reported (Wu et al. 2025, Table 1)"
    r = _one(df, table="Table 3", method="aim", dataset="aime24")
    assert r["keyword_hits"] == pytest.approx(30.5) and r["reflective_responses"] == 30
    r = _one(df, table="Table 2", role="slow", dataset="gsm8k")
    assert (r["model"], r["size"], r["mean_tokens"]) == ("DeepSeek-R1-Distill-Qwen-1.5B", "1.5B", 2744.3)
    assert _one(df, table="Table 4", role="quick", dataset="math500")["model"] == "Qwen2.5-32B"
    assert set(df["table"]) == {"Table 1", "Table 2", "Table 3", "Table 4"}
    assert df["keyword_hits"].notna().sum() == 36  # Tables 3-4 only: 2 tables x 6 models x 3 datasets


def test_wu_table_6_and_7():
    t6 = reference.wu2025_reflection_ratio()
    assert _one(t6, method="ties", dataset="gsm8k")["reflective_ratio"] == pytest.approx(19.2)
    assert _one(t6, method="slow", dataset="aime24")["reflective_ratio"] == pytest.approx(100.0)
    assert "avg" not in set(t6["dataset"]) and len(t6) == 8 * 6
    assert set(t6["label"]) == {"reported (Wu et al. 2025, Table 6)"}
    t7 = reference.wu2025_hyperparameters()
    assert _one(t7, method="ties", size="14B")["params"] == {"k": 0.2, "alpha": 0.5}
    assert _one(t7, method="sens", size="7B")["params"] == {"alpha": 0.7, "T": 2.0}


def test_luo_tables_and_figure_estimates():
    df = reference.luo2025_adar1()
    r = _one(df, table="Table 2", size="1.5B", method="ada_r1", dataset="gsm8k")
    assert (r["accuracy"], r["mean_tokens"], r["role"]) == (79.2, 341.0, "adar1")
    assert _one(df, table="Table 2", size="7B", model="merge", dataset="aime25")["method"] == "linear"
    assert _one(df, table="Table 3", model="merge_bi_level_dpo", dataset="math500")["accuracy"] == 90.2
    est = reference.luo2025_by_level()
    r = _one(est, method="ada_r1", level=5)
    assert r["accuracy"] == pytest.approx(79.0) and r["mean_tokens"] == 3009
    assert r["label"] == "estimated from figure (Luo et al. 2025, Figs. 5-6)"
    assert _one(est, method="short", level=1)["model"] == "short_cot"


def test_length_reduction_matches_hand_computation():
    lr = reference.length_reduction(reference.wu2025_merging())
    r = _one(lr, table="Table 2", method="ties")
    expected = ((393.8 - 2744.3) / 2744.3 + (1102.4 - 4510.0) / 4510.0 + (2818.7 - 8952.3) / 8952.3) / 3
    assert r["length_reduction"] == pytest.approx(expected)
    assert r["accuracy"] == pytest.approx((75.9 + 64.2 + 10.0) / 3)
    assert _one(lr, table="Table 1", method="slow")["length_reduction"] == 0.0


def test_canonical_names():
    assert [reference.canonical_size(s) for s in ("qwen-7b", "7B", "Qwen2.5-Math-1.5B", "toy-s", "qwen_14b")] == \
        ["7B", "7B", "1.5B", "toy-s", "14B"]
    assert [runs.canonical_method(m) for m in ("TIES_merging", "TA", "aim-ties", "dare_ta", None)] == \
        ["ties", "task_arithmetic", "aim", "dare_ta", None]
    assert runs.method_label("aim") == "AIM-TIES" and runs.method_label("new_thing") == "new_thing"


def test_shipped_csvs_equal_the_shared_reference(shared_data):
    shared = shared_data.parent / "reference"
    if not shared.is_dir():
        pytest.skip(f"{shared} not present")
    from importlib.resources import files

    for csv in sorted(shared.glob("*.csv")):
        assert files("l2s").joinpath("reference", csv.name).read_bytes() == csv.read_bytes(), csv.name
