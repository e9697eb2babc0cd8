"""The streaming executor on tiny random Qwen2 checkpoints: equal to in-memory merging, deterministic,
HF-loadable, vocabulary mismatches, and clear errors that leave nothing behind."""

import json
import re
from pathlib import Path

import pytest
import torch

from l2s import cli
from l2s.merge import METHODS, MergeConfig, merge
from l2s.merge.executor import Merger, dare_generator
from l2s.merge.methods.task_vector import dare
from l2s.tokenizers import load_tokenizer

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

from l2s.toy.tokenizer import build_tokenizer  # noqa: E402

VOCAB = len(build_tokenizer())  # one embedding row per toy token: every id the tokenizer gives is in range


def qwen2(seed, vocab=VOCAB, inter=64):
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=inter, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   tie_word_embeddings=False)
    return transformers.Qwen2ForCausalLM(cfg)


def save(model, path, shard="20KB"):
    model.save_pretrained(path, max_shard_size=shard)
    build_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {name: save(qwen2(i), root / name) for i, name in enumerate(["base", "m1", "m2"])}


def state(path):
    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def leftovers(out: Path):
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def run(ckpts, tmp_path, method, models=("m1", "m2"), base="base", name="out", **kw):
    cfg = MergeConfig(method=method, base=ckpts[base] if base else None, models=[ckpts[m] for m in models],
                      out=str(tmp_path / name), shard_size=kw.pop("shard_size", "30KB"), **kw)
    return merge(cfg)


@pytest.mark.parametrize("method, params", [
    ("average", {}), ("task_arithmetic", {"alpha": 0.7}), ("ties", {"k": 0.8, "alpha": 1.0}),
    ("dare+ties", {"k": 0.5, "p": 0.3}), ("dare+task_arithmetic", {"p": 0.5}), ("linear", {"alpha": 0.8}),
    ("lore", {"mu": 0.05, "iters": 3}), ("twin", {"r": 2}),
])
def test_streamed_equals_in_memory(ckpts, tmp_path, method, params):
    base = None if method in ("average", "linear") else "base"
    out = run(ckpts, tmp_path, method, base=base, params=params, seed=7)
    assert len(list(out.glob("*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    got = state(out)
    b, ms = state(ckpts["base"]), [state(ckpts[m]) for m in ("m1", "m2")]
    spec = MergeConfig(method=method, base="b", models=["x", "y"], out="o", params=params).spec
    resolved = MergeConfig(method=method, base=None if base is None else "b", models=["x", "y"], out="o",
                           params=params).resolved_params()
    core_params = {k: resolved[k] for k in METHODS[spec.core].fn_params}
    assert sorted(got) == sorted(b)
    for name in b:
        models = [m[name] for m in ms]
        if spec.dare:
            models = [b[name] + dare(m - b[name], params["p"], dare_generator(7, name, i))
                      for i, m in enumerate(models)]
        if spec.base_participates(resolved):
            models = [b[name]] + models
        want = METHODS[spec.core].fn(b[name], models, **core_params)
        assert torch.equal(got[name], want), name


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of 2 rows (64 entries) and a sampled TRIM selection on these tiny tensors."""
    from l2s.merge import executor
    from l2s.merge.methods import ties

    monkeypatch.setattr(executor, "BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(ties, "SELECT_DIRECT", 16)
    monkeypatch.setattr(ties, "SELECT_BLOCK", 100)


@pytest.mark.parametrize("method, params", [
    ("ties", {"k": 0.8}), ("dare+ties", {"k": 0.6, "p": 0.3}), ("dare+task_arithmetic", {"p": 0.5}),
    ("ties", {"k": 0.7, "trim": "global"}),
])
def test_block_by_block_equals_whole_tensors(ckpts, tmp_path, tiny_blocks, method, params):
    """Many blocks per tensor give the bytes of one block per tensor (the default on these sizes)."""
    blocks = state(run(ckpts, tmp_path, method, params=params, seed=7, name="blocks"))
    from l2s.merge import executor

    executor.BLOCK_ELEMENTS = 1 << 20
    whole = state(run(ckpts, tmp_path, method, params=params, seed=7, name="whole"))
    assert sorted(blocks) == sorted(whole)
    for name in whole:
        assert torch.equal(blocks[name].view(torch.int32), whole[name].view(torch.int32)), name


def test_reads_are_bounded_by_the_block_not_the_tensor(ckpts, tmp_path, tiny_blocks, monkeypatch):
    from l2s.merge.checkpoint import SafetensorsFile

    sizes, read = [], SafetensorsFile.read

    def spy(self, name, rows=None, into=None):
        t = read(self, name, rows, into)
        sizes.append(t.numel())
        return t

    monkeypatch.setattr(SafetensorsFile, "read", spy)
    run(ckpts, tmp_path, "dare+ties", params={"k": 0.8, "p": 0.3})
    biggest = max(v.numel() for v in state(ckpts["base"]).values())
    assert biggest == VOCAB * 32 and max(sizes) == 64  # 2 rows of 32, never a whole VOCAB x 32 tensor


def test_vocabulary_mismatch_block_by_block(ckpts, tmp_path, tiny_blocks):
    big = qwen2(1)
    big.resize_token_embeddings(VOCAB + 8)
    big_path = save(big, tmp_path / "big")
    out = merge(MergeConfig(method="ties", base=ckpts["base"], models=[big_path], out=str(tmp_path / "out"),
                            params={"k": 0.5}))
    got, b, m = state(out), state(ckpts["base"]), state(big_path)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        want = METHODS["ties"].fn(b[name], [m[name][:VOCAB]], k=0.5, alpha=1.0)
        assert torch.equal(got[name][:VOCAB], want) and torch.equal(got[name][VOCAB:], m[name][VOCAB:])


def test_global_trim_threshold_is_the_whole_model_kth_value(ckpts, tmp_path):
    out = run(ckpts, tmp_path, "ties", params={"k": 0.8, "trim": "global"})
    record = json.loads((out / "l2s_merge.json").read_text())
    b, ms = state(ckpts["base"]), [state(ckpts[m]) for m in ("m1", "m2")]
    for i, m in enumerate(ms):
        flat = torch.cat([(m[n] - b[n]).abs().reshape(-1) for n in sorted(b)])
        assert record["global_trim_thresholds"][i] == torch.kthvalue(flat, int(0.8 * flat.numel())).values.item()
    got, t = state(out), record["global_trim_thresholds"]
    for name in b:
        want = METHODS["ties"].fn(b[name], [m[name] for m in ms], k=0.8, alpha=1.0, thresholds=t)
        assert torch.equal(got[name], want)
    kept = sum(int(((m[n] - b[n]).abs() > t[0]).sum()) for n in b for m in ms[:1])
    assert kept == pytest.approx(0.2 * sum(v.numel() for v in b.values()), abs=2)


def test_identities_through_the_executor(ckpts, tmp_path):
    b, m1 = state(ckpts["base"]), state(ckpts["m1"])
    ta0 = state(run(ckpts, tmp_path, "task_arithmetic", models=("m1",), name="ta0", params={"alpha": 0.0}))
    assert all(torch.equal(ta0[n], b[n]) for n in b)
    ta1 = state(run(ckpts, tmp_path, "task_arithmetic", models=("m1",), name="ta1", params={"alpha": 1.0}))
    assert all(torch.allclose(ta1[n], m1[n], atol=1e-6) for n in b)
    ties0 = state(run(ckpts, tmp_path, "ties", models=("m1",), name="ties0", params={"k": 0.0, "alpha": 1.0}))
    assert all(torch.allclose(ties0[n], ta1[n]) for n in b)
    ties = state(run(ckpts, tmp_path, "ties", name="ties", params={"k": 0.8}))
    dare0 = state(run(ckpts, tmp_path, "dare+ties", name="dare0", params={"k": 0.8, "p": 0.0}))
    assert all(torch.equal(ties[n], dare0[n]) for n in b)
    lin = state(run(ckpts, tmp_path, "linear", base=None, name="lin", params={"alpha": 1.0}))
    assert all(torch.equal(lin[n], m1[n]) for n in b)


def test_same_seed_same_bytes_and_order_independent_masks(ckpts, tmp_path):
    a = run(ckpts, tmp_path, "dare+ties", name="a", seed=3, shard_size="30KB")
    b = run(ckpts, tmp_path, "dare+ties", name="b", seed=3, shard_size="5GB")  # other shard layout
    c = run(ckpts, tmp_path, "dare+ties", name="c", seed=4)
    sa, sb, sc = state(a), state(b), state(c)
    assert all(torch.equal(sa[n], sb[n]) for n in sa)
    assert any(not torch.equal(sa[n], sc[n]) for n in sa)
    a2 = run(ckpts, tmp_path, "dare+ties", name="a2", seed=3, shard_size="30KB")
    for f in a.glob("*.safetensors"):
        assert f.read_bytes() == (a2 / f.name).read_bytes()
    # one tensor merged alone equals the same tensor of the full run
    m = Merger(MergeConfig(method="dare+ties", base=ckpts["base"], models=[ckpts["m1"], ckpts["m2"]],
                           out=str(tmp_path / "unused"), seed=3))
    name = "model.layers.1.mlp.up_proj.weight"
    assert torch.equal(m.tensor(name), sa[name])


def test_input_fingerprints_sampled_and_full(ckpts, tmp_path):
    import shutil

    from l2s.merge.checkpoint import shard_fingerprint
    from l2s.provenance import file_sha256

    copy = tmp_path / "copy"
    shutil.copytree(ckpts["m1"], copy)
    shard = sorted(copy.glob("*.safetensors"))[0]
    same, kind = shard_fingerprint(shard)
    assert same == shard_fingerprint(Path(ckpts["m1"]) / shard.name)[0] and "windows" in kind
    assert shard_fingerprint(shard, "full") == (file_sha256(shard), "sha256")
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1  # the last byte lies in the last sampled window
    shard.write_bytes(bytes(data))
    assert shard_fingerprint(shard)[0] != same
    rec = json.loads((run(ckpts, tmp_path, "task_arithmetic", input_hash="full") / "l2s_merge.json").read_text())
    assert rec["base"]["shard_hash"] == ["sha256"]
    assert rec["base"]["shards"] == {p.name: file_sha256(p) for p in Path(ckpts["base"]).glob("*.safetensors")}
    assert rec["outputs"] == {p.name: file_sha256(p) for p in (tmp_path / "out").glob("*.safetensors")}


def test_output_is_a_loadable_hf_checkpoint(ckpts, tmp_path):
    out = run(ckpts, tmp_path, "ties", dtype="bfloat16")
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "l2s_merge.json"):
        assert (out / f).is_file(), f
    record = json.loads((out / "l2s_merge.json").read_text())
    assert record["method"] == "ties" and record["params"] == {"k": 0.8, "alpha": 1.0, "trim": "tensor"}
    assert record["seed"] == 0 and record["l2s_version"] and record["provenance"]["packages"]["torch"]
    assert set(record["base"]["shards"]) == {p.name for p in Path(ckpts["base"]).glob("*.safetensors")}
    assert record["models"][0]["config_sha256"]
    assert set(record["outputs"]) == {p.name for p in out.glob("*.safetensors")}
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    tok = load_tokenizer(out)
    ids = tok.apply_chat_template([{"role": "user", "content": "Where is the ball ?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    gen = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] == ids.shape[1] + 4


def test_vocabulary_mismatch_merges_common_rows(ckpts, tmp_path):
    big = qwen2(1)
    big.resize_token_embeddings(VOCAB + 8)
    big_path = save(big, tmp_path / "big")
    cfg = MergeConfig(method="task_arithmetic", base=ckpts["base"], models=[big_path], out=str(tmp_path / "out"),
                      params={"alpha": 0.5})
    out = merge(cfg)
    got, b, m = state(out), state(ckpts["base"]), state(big_path)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert got[name].shape[0] == VOCAB + 8
        assert torch.equal(got[name][:VOCAB], b[name] + 0.5 * (m[name][:VOCAB] - b[name]))
        assert torch.equal(got[name][VOCAB:], m[name][VOCAB:])
    assert json.loads((out / "config.json").read_text())["vocab_size"] == VOCAB + 8
    record = json.loads((out / "l2s_merge.json").read_text())["vocab_mismatch"]
    assert record["common_rows"] == VOCAB and record["output_rows"] == VOCAB + 8
    assert sorted(record["tensors"]) == ["lm_head.weight", "model.embed_tokens.weight"]
    transformers.AutoModelForCausalLM.from_pretrained(out).generate(torch.tensor([[1, 2]]), max_new_tokens=2)
    # the base as tokenizer source: its VOCAB rows
    small = merge(MergeConfig(method="task_arithmetic", base=ckpts["base"], models=[big_path], params={"alpha": 0.5},
                              out=str(tmp_path / "small"), tokenizer_source=ckpts["base"]))
    assert state(small)["lm_head.weight"].shape[0] == VOCAB


def cli_merge(ckpts, out, *extra, models="m1"):
    argv = ["merge", "--method", "ties", "--base", ckpts["base"],
            "--models", ",".join(ckpts.get(m, m) for m in models.split(",")), "--out", str(out), *extra]
    return cli.main(argv)


def test_cli_and_yaml_config(ckpts, tmp_path, capsys):
    assert cli_merge(ckpts, tmp_path / "a", "--param", "k=0.5", "--param", "alpha=0.9", "--seed", "1") == 0
    rec = json.loads((tmp_path / "a" / "l2s_merge.json").read_text())
    assert rec["params"]["k"] == 0.5 and rec["params"]["alpha"] == 0.9 and rec["seed"] == 1
    (tmp_path / "m.yaml").write_text(f"method: dare_ties\nbase: {ckpts['base']}\nmodels: [{ckpts['m1']}]\n"
                                     f"params: {{k: 0.5, p: 0.2}}\nout: {tmp_path / 'b'}\n")
    assert cli.main(["merge", "--config", str(tmp_path / "m.yaml"), "--param", "p=0.1"]) == 0
    assert json.loads((tmp_path / "b" / "l2s_merge.json").read_text())["params"]["p"] == 0.1
    assert cli_merge(ckpts, tmp_path / "a") == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_merge(ckpts, tmp_path / "a", "--overwrite", "--param", "k=0.1") == 0
    assert json.loads((tmp_path / "a" / "l2s_merge.json").read_text())["params"]["k"] == 0.1
    assert leftovers(tmp_path / "a") == []


def broken(ckpts, tmp_path, kind):
    """A copy of m1 with one defect."""
    import shutil

    d = tmp_path / kind
    shutil.copytree(ckpts["m1"], d)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    if kind == "truncated":
        shard = d / sorted(set(index["weight_map"].values()))[0]
        shard.write_bytes(shard.read_bytes()[:-100])
    elif kind == "garbage":
        shard = d / sorted(set(index["weight_map"].values()))[0]
        shard.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    elif kind == "noshard":
        (d / sorted(set(index["weight_map"].values()))[-1]).unlink()
    elif kind == "renamed":
        from safetensors.torch import save_file

        shard = sorted(set(index["weight_map"].values()))[-1]
        tensors = load_file(d / shard)
        old = sorted(tensors)[0]
        tensors["model.extra.weight"] = tensors.pop(old)
        save_file(tensors, d / shard, metadata={"format": "pt"})
        index["weight_map"]["model.extra.weight"] = index["weight_map"].pop(old)
        (d / "model.safetensors.index.json").write_text(json.dumps(index))
    elif kind == "nan":
        from safetensors.torch import save_file

        shard = sorted(set(index["weight_map"].values()))[-1]
        tensors = load_file(d / shard)
        tensors[sorted(tensors)[0]][0] = float("nan")
        save_file(tensors, d / shard, metadata={"format": "pt"})
    return str(d)


@pytest.mark.parametrize("kind, msg", [
    ("truncated", "corrupt or unreadable safetensors shard"),
    ("garbage", "corrupt or unreadable safetensors shard"),
    ("noshard", "which is missing"),
    ("renamed", "is in .* but missing from"),
    ("nan", "NaN or inf"),
])
def test_bad_inputs_give_clear_errors_and_leave_nothing(ckpts, tmp_path, capsys, kind, msg):
    bad = broken(ckpts, tmp_path, kind)
    out = tmp_path / "out"
    assert cli_merge(ckpts, out, models=bad) == 2
    err = capsys.readouterr().err
    assert re.search(msg, err), err
    assert not out.exists() and leftovers(out) == []


def test_shape_mismatch_names_tensor_and_both_files(ckpts, tmp_path, capsys):
    other = save(qwen2(5, inter=48), tmp_path / "other")
    out = tmp_path / "out"
    assert cli_merge(ckpts, out, models=other) == 2
    err = capsys.readouterr().err
    assert re.search(r"tensor 'model.layers.0.mlp.down_proj.weight' has shape \[32, 64\] in \S*/base/\S+ "
                     r"but \[32, 48\] in \S*/other/model-\S+.safetensors", err), err
    assert not out.exists() and leftovers(out) == []


@pytest.mark.parametrize("extra, msg", [
    (["--param", "k=2"], "out of range"), (["--param", "zz=1"], "unknown parameter"),
    (["--method", "nope"], "unknown merge method"), (["--param", "k"], "NAME=VALUE"),
    (["--param", "alpha=1e300"], "merged tensor .* has NaN or inf"),
])
def test_bad_parameters_via_cli(ckpts, tmp_path, capsys, extra, msg):
    out = tmp_path / "out"
    assert cli_merge(ckpts, out, *extra) == 2
    assert re.search(msg, capsys.readouterr().err)
    assert not out.exists() and leftovers(out) == []


def test_missing_base_and_missing_checkpoint(ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["merge", "--method", "ties", "--models", ckpts["m1"], "--out", str(out)]) == 2
    assert "needs a base" in capsys.readouterr().err
    assert cli_merge(ckpts, out, models=str(tmp_path / "nowhere")) == 2
    assert "not found" in capsys.readouterr().err
    assert not out.exists() and leftovers(out) == []


def test_rows_blocks_hashes_and_threads(ckpts, tmp_path, monkeypatch):
    import hashlib
    import os

    from l2s.merge.checkpoint import Checkpoint, ShardWriter, shard_sha256
    from l2s.merge.executor import torch_threads

    ck, full = Checkpoint(Path(ckpts["base"])), state(ckpts["base"])
    name = "model.embed_tokens.weight"
    assert torch.equal(ck.read(name, (10, 13)), full[name][10:13])
    with pytest.raises(ValueError, match="has no rows"):
        ck.read(name, (VOCAB - 1, VOCAB + 1))  # the last row and one past the end
    (tmp_path / "w").mkdir()
    w = ShardWriter(tmp_path / "w", [("a", torch.float32, (4, 2))], 10**6)
    with pytest.raises(RuntimeError, match="got 24 bytes, planned"):
        w.write("a", iter([torch.zeros(1, 2), torch.zeros(2, 2)]))
    w.abort()
    # an error of the writer thread reaches the caller
    w = ShardWriter(tmp_path / "gone", [("a", torch.float32, (4, 2))], 10**6)
    with pytest.raises(RuntimeError, match="writing .*gone"):
        w.write("a", torch.zeros(4, 2))  # raised here or by close, whenever the thread failed
        w.close()
    w.abort()
    # a hub cache file: its blob's name is its SHA-256
    data = b"weights"
    blob = tmp_path / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir()
    blob.write_bytes(data)
    (tmp_path / "model.safetensors").symlink_to(blob)
    blob.write_bytes(b"changed")  # proves the name, not the content, was used
    assert shard_sha256(tmp_path / "model.safetensors") == hashlib.sha256(data).hexdigest()
    assert shard_sha256(blob) == hashlib.sha256(b"changed").hexdigest()
    # threads: all cores unless OMP_NUM_THREADS caps them; restored afterwards
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with torch_threads():
        assert torch.get_num_threads() == before
    monkeypatch.delenv("OMP_NUM_THREADS")
    with torch_threads():
        assert torch.get_num_threads() == max(before, os.cpu_count())
    assert torch.get_num_threads() == before


def test_already_merged_recognises_the_same_merge_only(ckpts, tmp_path):
    from l2s.merge import MergeConfig, already_merged, merge

    cfg = MergeConfig(method="task_arithmetic", base=str(ckpts["base"]), models=[str(ckpts["m1"])],
                      params={"alpha": 0.5}, out=str(tmp_path / "ta"), dtype="float32")
    assert not already_merged(cfg)
    merge(cfg)
    assert already_merged(cfg)
    again = MergeConfig(**{**cfg.to_dict(), "overwrite": True})
    assert already_merged(again)
    assert not already_merged(MergeConfig(**{**cfg.to_dict(), "params": {"alpha": 0.6}}))
