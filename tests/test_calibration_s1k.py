"""``l2s calibration s1k`` and the calibration passes that read its files.

``tests/data/s1k-sample.jsonl`` is a schema fixture written for these tests, not s1K data: seven short
math problems of our own in s1K's columns (short solution, R1-style thinking trajectory, attempt).

Covered: byte-determinism and the seeded draw, the manifest, the no-op rerun and the refusal, clear
errors on bad input (missing column, too few rows, unreadable file, hub offline), a parquet source, the
truncation count of the calibration passes, the hook-based Sens-Merging sensitivities against the old
full-gradient pass, and AIM-TIES / Sens-Merging merges on the written files.
"""

import json
import random
from pathlib import Path

import pytest
import torch

from l2s.cli import UserError, main
from l2s.io import read_jsonl
from l2s.merge import MergeConfig, calibration, merge, s1k
from l2s.provenance import file_sha256

FIXTURE = Path(__file__).parent / "data" / "s1k-sample.jsonl"
FILES = (s1k.SHORT, s1k.LONG, s1k.MANIFEST)


def write(out, **kw):
    return s1k.write_s1k_calibration(out, **{"n": 4, "seed": 0, "source": FIXTURE, **kw})


def contents(out):
    return {name: (Path(out) / name).read_bytes() for name in FILES}


def test_same_inputs_same_bytes_another_seed_other_rows(tmp_path):
    write(tmp_path / "a")
    write(tmp_path / "b")
    assert contents(tmp_path / "a") == contents(tmp_path / "b")
    other = write(tmp_path / "c", seed=1)
    assert other["indices"] != json.loads(contents(tmp_path / "a")[s1k.MANIFEST])["indices"]
    assert contents(tmp_path / "c")[s1k.SHORT] != contents(tmp_path / "a")[s1k.SHORT]


def test_files_and_manifest(tmp_path):
    manifest = write(tmp_path)
    rows = read_jsonl(FIXTURE)
    assert manifest["indices"] == random.Random(0).sample(range(len(rows)), 4)
    assert manifest["source"] == {"path": str(FIXTURE), "sha256": file_sha256(FIXTURE)}
    assert (manifest["n"], manifest["seed"], manifest["source_rows"]) == (4, 0, len(rows))
    for name in (s1k.SHORT, s1k.LONG):
        assert manifest["files"][name] == {"rows": 4, "sha256": file_sha256(tmp_path / name)}
    short, long = read_jsonl(tmp_path / s1k.SHORT), read_jsonl(tmp_path / s1k.LONG)
    for i, s, lg in zip(manifest["indices"], short, long):
        assert s == {"question": rows[i]["question"], "solution": rows[i]["solution"]}
        assert lg["question"] == rows[i]["question"]
        trace, attempt = rows[i]["thinking_trajectories"], rows[i]["attempt"]
        assert lg["solution"] == "\n".join(trace).strip() + "\n\n" + attempt.strip()
        assert "Wait," in lg["solution"] and "</think>" not in lg["solution"]
    assert json.loads((tmp_path / s1k.MANIFEST).read_text()) == manifest


def test_rerun_is_a_noop_other_arguments_are_refused(tmp_path, monkeypatch):
    first = write(tmp_path)
    before = contents(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(s1k, "write_jsonl", lambda *a: pytest.fail("an up-to-date rerun rewrote a file"))
        assert write(tmp_path) == first
    with pytest.raises(FileExistsError, match=r"n=4, seed=0.*n=5, seed=0.*--overwrite"):
        write(tmp_path, n=5)
    with pytest.raises(FileExistsError, match="--overwrite"):
        write(tmp_path, seed=3)
    assert contents(tmp_path) == before
    assert write(tmp_path, n=5, overwrite=True)["n"] == 5
    (tmp_path / s1k.SHORT).write_text("edited\n")  # same arguments, files no longer match: rewritten
    write(tmp_path, n=5)
    recorded = json.loads((tmp_path / s1k.MANIFEST).read_text())["files"][s1k.SHORT]["sha256"]
    assert file_sha256(tmp_path / s1k.SHORT) == recorded
    (tmp_path / s1k.MANIFEST).unlink()
    with pytest.raises(FileExistsError, match="without a s1k.json manifest"):
        write(tmp_path)


def test_cli(tmp_path, capsys):
    out = tmp_path / "calibration"
    args = ["calibration", "s1k", "--source", str(FIXTURE), "--n", "3", "--seed", "2", "--out-dir", str(out)]
    assert main(args) == 0
    assert capsys.readouterr().out.split() == [str(out / name) for name in FILES]
    assert main(args) == 0
    assert main(args[:-4] + ["--n", "2", "--out-dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args[:-4] + ["--n", "2", "--out-dir", str(out), "--overwrite"]) == 0


def _fixture_with(tmp_path, edit, name="bad.jsonl"):
    rows = read_jsonl(FIXTURE)
    edit(rows)
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[2].pop("attempt"), r"bad.jsonl, row 2: missing field\(s\) attempt"),
    (lambda rows: rows.__setitem__(slice(None), [{**r, "thinking_trajectories": "one string"} for r in rows]),
     "field 'thinking_trajectories' must be a non-empty list of strings"),
    (lambda rows: rows.__setitem__(slice(None), [{**r, "solution": None} for r in rows]),
     "field 'solution' must be a non-empty string"),
])
def test_bad_rows_name_file_row_and_field(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        write(tmp_path / "out", source=_fixture_with(tmp_path, edit))
    assert not (tmp_path / "out").exists()


def test_bad_sources(tmp_path):
    with pytest.raises(ValueError, match=r"has 7 rows, fewer than n=8; pass --n 7 or fewer"):
        write(tmp_path / "out", n=8)
    with pytest.raises(FileNotFoundError, match=r"nope.jsonl not found; pass --source"):
        write(tmp_path / "out", source=tmp_path / "nope.jsonl")
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"\xff\xfe\x00not json")
    with pytest.raises(ValueError, match="garbage.jsonl"):
        write(tmp_path / "out", source=garbage)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file")
    with pytest.raises(ValueError, match="broken.parquet: unreadable as parquet"):
        write(tmp_path / "out", source=broken)
    csv = tmp_path / "s1k.csv"
    csv.write_text("question\n")
    with pytest.raises(ValueError, match=r"expected a \.jsonl or \.parquet file"):
        write(tmp_path / "out", source=csv)
    with pytest.raises(ValueError, match="revision applies to the hub dataset only"):
        write(tmp_path / "out", revision="main")
    assert main(["calibration", "s1k", "--source", str(garbage), "--out-dir", str(tmp_path / "out")]) == 2


def test_hub_offline_says_pass_source(tmp_path, monkeypatch, capsys):
    datasets = pytest.importorskip("datasets")

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'simplescaling/s1K' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(s1k, "_hub_commit", lambda revision: None)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match=r"cannot load simplescaling/s1K .*pass --source FILE"):
        s1k.write_s1k_calibration(tmp_path / "out")
    assert main(["calibration", "s1k", "--out-dir", str(tmp_path / "out")]) == 2
    assert "pass --source FILE" in capsys.readouterr().err


def test_hub_source_is_recorded_and_a_rerun_needs_no_hub(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def load(repo, split, revision):
        calls.append((repo, split, revision))
        return datasets.Dataset.from_list(read_jsonl(FIXTURE))

    monkeypatch.setattr(s1k, "_hub_commit", lambda revision: "0123abcd")
    monkeypatch.setattr(datasets, "load_dataset", load)
    manifest = s1k.write_s1k_calibration(tmp_path, n=4)
    assert calls == [("simplescaling/s1K", "train", "0123abcd")]
    assert manifest["source"] == {"hub": "simplescaling/s1K", "split": "train", "revision": None, "commit": "0123abcd"}
    write(tmp_path / "local")
    assert (tmp_path / s1k.SHORT).read_bytes() == (tmp_path / "local" / s1k.SHORT).read_bytes()
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("hub read on an up-to-date rerun"))
    assert s1k.write_s1k_calibration(tmp_path, n=4) == manifest
    with pytest.raises(FileExistsError, match="--overwrite"):
        s1k.write_s1k_calibration(tmp_path, n=4, revision="v2")


def test_parquet_source(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rows = read_jsonl(FIXTURE)
    parquet = tmp_path / "s1k.parquet"
    pd.DataFrame(rows).to_parquet(parquet)
    manifest = write(tmp_path / "p", source=parquet)
    write(tmp_path / "j")
    assert manifest["source"] == {"path": str(parquet), "sha256": file_sha256(parquet)}
    for name in (s1k.SHORT, s1k.LONG):
        assert (tmp_path / "p" / name).read_bytes() == (tmp_path / "j" / name).read_bytes()
    pd.DataFrame(rows).drop(columns=["thinking_trajectories"]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad.parquet: missing column\(s\) thinking_trajectories"):
        write(tmp_path / "q", source=tmp_path / "bad.parquet")


# -- the calibration passes ------------------------------------------------------------------------

transformers = pytest.importorskip("transformers")
from test_merge import VOCAB, qwen2, save  # noqa: E402

TEXTS = ["Eight cups stand in a row . The ball is under cup C .", "The answer is \\boxed{F}",
         "Wait , let me double-check . start→C CF→F FH→H The answer is \\boxed{H}"]


def tied_qwen2(seed):
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   tie_word_embeddings=True)
    return transformers.Qwen2ForCausalLM(cfg)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("s1k-models")
    return {"base": save(qwen2(0), root / "base"), "m1": save(qwen2(1), root / "m1"),
            "tied": save(tied_qwen2(2), root / "tied")}


def full_gradient_sensitivities(path, texts, max_tokens):
    """The pass before the hooks: fp32, every parameter's full gradient kept, then summed per layer."""
    from l2s.tokenizers import load_tokenizer

    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok, totals = load_tokenizer(path), {}
    for text in texts:
        ids = tok(text, return_tensors="pt", truncation=True, max_length=max_tokens, add_special_tokens=False).input_ids
        model.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                layer = calibration.layer_of(name)
                totals[layer] = totals.get(layer, 0.0) + float((p.detach() * p.grad).abs().sum())
    return {k: v / len(texts) for k, v in sorted(totals.items())}


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("name", ["base", "tied"])
def test_hook_sensitivities_equal_the_full_gradient_pass(pair, name, checkpointing):
    want = full_gradient_sensitivities(pair[name], TEXTS, 12)
    got = calibration.layer_sensitivities(pair[name], TEXTS, 12, gradient_checkpointing=checkpointing)
    assert calibration.sens_dtype() == torch.float32  # CPU: fp32, as before
    assert sorted(got) == sorted(want) and "model.layers.1" in got and "model.embed_tokens" in got
    for layer in want:
        assert got[layer] == pytest.approx(want[layer], rel=1e-5), layer


def test_sensitivity_pass_leaves_no_gradient(pair):
    from l2s.tokenizers import load_tokenizer

    model = transformers.AutoModelForCausalLM.from_pretrained(pair["m1"]).eval()
    calibration.sensitivities(model, load_tokenizer(pair["m1"]), TEXTS, 64)
    assert all(p.grad is None for p in model.parameters())
    ids = torch.tensor([[5, 6, 7, 8]])
    model(ids, labels=ids).loss.backward()  # the hooks are gone: an ordinary backward keeps its gradients
    assert all(p.grad is not None for p in model.parameters())


def test_truncation_is_counted():
    from l2s.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    lengths = [len(tok(t, add_special_tokens=False).input_ids) for t in TEXTS]
    cut = calibration.truncation(tok, TEXTS, 12)
    assert cut == {"texts": 3, "truncated": sum(n > 12 for n in lengths), "max_tokens": 12, "longest": max(lengths)}
    assert 0 < cut["truncated"] < 3


def test_calibrated_merges_run_on_the_written_files(pair, tmp_path, caplog):
    write(tmp_path / "calibration", n=5)
    short, long = str(tmp_path / "calibration" / s1k.SHORT), str(tmp_path / "calibration" / s1k.LONG)
    cap = 192  # toy BPE tokens: more than any short answer of the sample has, fewer than any long one
    kw = dict(base=pair["base"], models=[pair["m1"]], calibration_max_tokens=cap)
    with caplog.at_level("WARNING", logger="l2s.merge.calibration"):
        aim = merge(MergeConfig(method="aim+ties", calibration=[short], params={"k": 0.8, "omega": 0.4},
                                out=str(tmp_path / "aim"), **kw))
        sens = merge(MergeConfig(method="sens", calibration=[long, short], params={"alpha": 0.7, "T": 2.0},
                                 out=str(tmp_path / "sens"), **kw))
    aim_meta = calibration.aim_metadata(json.loads((aim / "l2s_merge.json").read_text())["stats"]["aim"]["path"])
    assert aim_meta["dtype"] == "float32" and aim_meta["truncation"]["texts"] == 5
    assert aim_meta["truncation"]["truncated"] == 0  # the short answers fit
    stats = json.loads(open(json.loads((sens / "l2s_merge.json").read_text())["stats"]["sens"]["path"]).read())
    assert stats["dtype"] == "float32" and stats["calibration"] == [long, short]
    long_cut, short_cut = stats["truncation"]
    assert long_cut["truncated"] == 5 and long_cut["longest"] > cap and short_cut["truncated"] == 0
    assert "5 of 5 calibration texts" in caplog.text and f"cut to their first {cap} tokens" in caplog.text
    assert stats["logit_distance"][0][1] > 0 and all(v > 0 for v in stats["layer_sensitivity"][1].values())
