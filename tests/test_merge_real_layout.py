"""Merges of checkpoints laid out like the real long-to-short pairs, on tiny random Qwen2 models.

1.5B layout: Qwen2.5-Math-1.5B ties its embeddings (no ``lm_head.weight``), R1-Distill-Qwen-1.5B
does not. 7B layout: both untied, Qwen2.5-Math-7B with 4096 positions, R1-Distill-Qwen-7B with
131072. The merged tensors are checked against the formulas applied to the effective inputs (a tied
model's lm_head is its embed_tokens), the merged configs and ``l2s_merge.json`` against what was done.
"""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from l2s.merge import METHODS, MergeConfig, merge
from l2s.merge.executor import dare_generator
from l2s.merge.methods import svd
from l2s.merge.methods.activation import aim_importance
from l2s.merge.methods.task_vector import dare

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

from l2s.toy.tokenizer import build_tokenizer  # noqa: E402

HEAD, EMBED = "lm_head.weight", "model.embed_tokens.weight"
VOCAB = len(build_tokenizer())  # embedding rows, one per toy token (the wide tied base has 16 more)
TEXTS = ["Eight cups stand in a row . The ball is under cup C .", "Where is the ball ? The answer is \\boxed{F}"]


def qwen2(path, seed, *, tied, vocab=VOCAB, positions=4096, max_length=None, eos=None):
    """A tiny random Qwen2 checkpoint (several shards) with the toy tokenizer; ``max_length``: its
    tokenizer_config.json's model_max_length."""
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(hidden_size=64, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=2,
                                   intermediate_size=128, vocab_size=vocab, max_position_embeddings=positions,
                                   tie_word_embeddings=tied, eos_token_id=eos)
    transformers.Qwen2ForCausalLM(cfg).save_pretrained(path, safe_serialization=True, max_shard_size="60KB")
    tok = build_tokenizer()
    if max_length is not None:
        tok.model_max_length = max_length
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {
        # 1.5B layout: a tied System 1, untied fine-tunes
        "tied": qwen2(root / "tied", 0, tied=True),
        "ft1": qwen2(root / "ft1", 1, tied=False),
        "ft2": qwen2(root / "ft2", 2, tied=False),
        "tied2": qwen2(root / "tied2", 3, tied=True),
        "tied_wide": qwen2(root / "tied_wide", 4, tied=True, vocab=VOCAB + 16),
        # 7B layout: untied, 4k-context System 1, 128k-context System 2
        "base4k": qwen2(root / "base4k", 5, tied=False, positions=4096, max_length=4096, eos=5),
        "slow128k": qwen2(root / "slow128k", 6, tied=False, positions=131072, max_length=16384, eos=7),
    }


def state(path):
    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def effective(path):
    """The tensors a model computes with: a tied checkpoint's lm_head.weight is its embed_tokens."""
    sd = state(path)
    if json.loads((Path(path) / "config.json").read_text())["tie_word_embeddings"]:
        assert HEAD not in sd
        sd[HEAD] = sd[EMBED]
    return sd


def config(path):
    return json.loads((Path(path) / "config.json").read_text())


def record(out):
    return json.loads((Path(out) / "l2s_merge.json").read_text())


def do_merge(ck, tmp_path, method, models, base=None, name="out", **kw):
    return merge(MergeConfig(method=method, base=ck[base] if base else None, models=[ck[m] for m in models],
                             out=str(tmp_path / name), **kw))


def expected(method, params, base, models, seed=0, thresholds=None):
    """Every tensor of the merge, computed in memory from the formula of :data:`METHODS`."""
    cfg = MergeConfig(method=method, base="b" if base is not None else None, models=["x"] * len(models),
                      out="o", params=params)
    spec, resolved = cfg.spec, cfg.resolved_params()
    own = {k: v for k, v in resolved.items() if k in METHODS[spec.core].params and k != "include_base"}
    if thresholds is not None:
        own["thresholds"] = thresholds
    out = {}
    for name in models[0]:
        b, ms = (base[name] if base is not None else None), [m[name] for m in models]
        if spec.dare:
            ms = [b + dare(m - b, resolved["p"], dare_generator(seed, name, i)) for i, m in enumerate(ms)]
        if spec.core == "lore" and resolved["include_base"]:
            ms = [b] + ms
        out[name] = METHODS[spec.core].fn(b, ms, **own)
    return out


def assert_untied_loadable(out, want):
    """The merged model loads with transformers, its lm_head is its own tensor, holding ``want``."""
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert torch.equal(model.lm_head.weight.detach(), want[HEAD])
    assert torch.equal(model.model.embed_tokens.weight.detach(), want[EMBED])
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)


@pytest.mark.parametrize("source", [None, "tied"])
def test_task_arithmetic_tied_base_untied_finetunes(ck, tmp_path, source):
    """α = 0.7 over two fine-tunes: lm_head = E_0 + 0.7 Σ_i (H_i − E_0), E_0 the tied base's embeddings."""
    out = do_merge(ck, tmp_path, "task_arithmetic", ["ft1", "ft2"], base="tied", params={"alpha": 0.7},
                   tokenizer_source=ck[source] if source else None)
    got, b, m1, m2 = state(out), state(ck["tied"]), state(ck["ft1"]), state(ck["ft2"])
    assert torch.equal(got[HEAD], b[EMBED] + 0.7 * ((m1[HEAD] - b[EMBED]) + (m2[HEAD] - b[EMBED])))
    assert torch.equal(got[EMBED], b[EMBED] + 0.7 * ((m1[EMBED] - b[EMBED]) + (m2[EMBED] - b[EMBED])))
    want = expected("task_arithmetic", {"alpha": 0.7}, effective(ck["tied"]), [m1, m2])
    assert sorted(got) == sorted(want) and all(torch.equal(got[n], want[n]) for n in want)
    assert config(out)["tie_word_embeddings"] is False
    tied = record(out)["tied_embeddings"]
    assert tied == {"inputs": {ck["tied"]: True, ck["ft1"]: False, ck["ft2"]: False}, "output": False,
                    "lm_head_from_embed_tokens": [ck["tied"]]}
    assert_untied_loadable(out, got)


def test_average_of_a_tied_and_untied_models(ck, tmp_path):
    """Model soup of the tied System 1 and two untied fine-tunes: lm_head = (E_0 + H_1 + H_2) / 3."""
    out = do_merge(ck, tmp_path, "average", ["ft1", "tied", "ft2"])
    got, b, m1, m2 = state(out), state(ck["tied"]), state(ck["ft1"]), state(ck["ft2"])
    assert torch.equal(got[HEAD], (m1[HEAD] + b[EMBED] + m2[HEAD]) / 3)
    assert torch.equal(got[EMBED], (m1[EMBED] + b[EMBED] + m2[EMBED]) / 3)
    assert record(out)["tied_embeddings"]["lm_head_from_embed_tokens"] == [ck["tied"]]
    assert config(out)["tie_word_embeddings"] is False
    assert_untied_loadable(out, got)


@pytest.mark.parametrize("method, params, models", [
    ("ties", {"k": 0.6, "alpha": 0.9}, ["ft1", "ft2"]),
    ("ties", {"k": 0.7, "alpha": 0.8, "trim": "global"}, ["ft1", "ft2"]),
    ("dare+ties", {"k": 0.5, "p": 0.3, "alpha": 0.9}, ["ft1", "ft2"]),
    ("dare+task_arithmetic", {"p": 0.4, "alpha": 0.6}, ["ft1", "ft2"]),
    ("lore", {"mu": 0.05, "iters": 3, "alpha": 0.8}, ["ft1", "ft2"]),
    ("twin", {"r": 3, "alpha": 0.6}, ["ft1", "ft2"]),
    ("linear", {"alpha": 0.7}, ["ft1", "tied"]),
])
def test_every_method_family_on_the_tied_layout(ck, tmp_path, method, params, models):
    """Elementwise (TIES with per-tensor and whole-model TRIM, DARE), whole-tensor (LoRE, Twin) and
    base-less (linear) merges of a tied System 1 with untied fine-tunes equal their formulas."""
    base = None if method == "linear" else "tied"
    out = do_merge(ck, tmp_path, method, models, base=base, params=params, seed=11)
    rec = record(out)
    got = state(out)
    inputs = [effective(ck[m]) for m in models]
    thresholds = rec["global_trim_thresholds"]
    if params.get("trim") == "global":  # whole-model k-th |δ_i|, lm_head's δ_i = H_i − E_0 included
        b = effective(ck["tied"])
        for i, m in enumerate(inputs):
            flat = torch.cat([(m[n] - b[n]).abs().reshape(-1) for n in sorted(b)])
            assert thresholds[i] == torch.kthvalue(flat, int(0.7 * flat.numel())).values.item()
    want = expected(method, params, effective(ck[base]) if base else None, inputs, seed=11, thresholds=thresholds)
    assert sorted(got) == sorted(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert rec["tied_embeddings"]["lm_head_from_embed_tokens"] == [ck["tied"]]
    assert config(out)["tie_word_embeddings"] is False
    assert_untied_loadable(out, got)


def test_all_tied_inputs_keep_the_output_tied(ck, tmp_path):
    out = do_merge(ck, tmp_path, "task_arithmetic", ["tied2"], base="tied", params={"alpha": 0.7})
    got, b, m = state(out), state(ck["tied"]), state(ck["tied2"])
    assert HEAD not in got and torch.equal(got[EMBED], b[EMBED] + 0.7 * (m[EMBED] - b[EMBED]))
    assert config(out)["tie_word_embeddings"] is True
    assert record(out)["tied_embeddings"] == {"inputs": {ck["tied"]: True, ck["tied2"]: True}, "output": True,
                                              "lm_head_from_embed_tokens": []}
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 3 rows of 64, so the vocabulary tensors are read in many row blocks."""
    from l2s.merge import executor

    monkeypatch.setattr(executor, "BLOCK_ELEMENTS", 3 * 64)


def test_tied_base_with_more_vocabulary_rows(ck, tmp_path, small_blocks):
    """A tied System 1 with 16 more vocabulary rows than the untied fine-tunes: the VOCAB common rows are
    merged, block by block, from the base's embeddings; the extra rows come from the tokenizer source."""
    b, m1, m2 = state(ck["tied_wide"]), state(ck["ft1"]), state(ck["ft2"])

    def ta(e0, name):
        return e0 + 0.7 * ((m1[name] - e0) + (m2[name] - e0))

    out = do_merge(ck, tmp_path, "task_arithmetic", ["ft1", "ft2"], base="tied_wide", params={"alpha": 0.7})
    got = state(out)
    assert got[HEAD].shape[0] == VOCAB and torch.equal(got[HEAD], ta(b[EMBED][:VOCAB], HEAD))
    assert torch.equal(got[EMBED], ta(b[EMBED][:VOCAB], EMBED))
    assert config(out)["vocab_size"] == VOCAB
    assert_untied_loadable(out, got)

    out = do_merge(ck, tmp_path, "task_arithmetic", ["ft1", "ft2"], base="tied_wide", params={"alpha": 0.7},
                   tokenizer_source=ck["tied_wide"], name="base-source")
    got = state(out)
    assert got[HEAD].shape[0] == VOCAB + 16 and got[EMBED].shape[0] == VOCAB + 16
    assert torch.equal(got[HEAD][:VOCAB], ta(b[EMBED][:VOCAB], HEAD))
    assert torch.equal(got[HEAD][VOCAB:], b[EMBED][VOCAB:]) and torch.equal(got[EMBED][VOCAB:], b[EMBED][VOCAB:])
    rec = record(out)
    assert sorted(rec["vocab_mismatch"]["tensors"]) == [HEAD, EMBED]
    assert rec["vocab_mismatch"]["common_rows"] == VOCAB and rec["vocab_mismatch"]["output_rows"] == VOCAB + 16
    assert rec["tied_embeddings"]["lm_head_from_embed_tokens"] == [ck["tied_wide"]]
    cfg = config(out)
    assert cfg["vocab_size"] == VOCAB + 16 and cfg["tie_word_embeddings"] is False
    assert_untied_loadable(out, got)


def test_lore_on_the_tied_layout_with_a_vocabulary_mismatch(ck, tmp_path):
    """A whole-tensor merge reads the aliased lm_head's common rows and appends the source's extra rows."""
    params = {"mu": 0.05, "iters": 2, "alpha": 0.9}
    out = do_merge(ck, tmp_path, "lore", ["ft1"], base="tied_wide", params=params, tokenizer_source=ck["tied_wide"])
    got, b, m1 = state(out), effective(ck["tied_wide"]), state(ck["ft1"])
    for name in (HEAD, EMBED):
        want = METHODS["lore"].fn(b[name][:VOCAB], [b[name][:VOCAB], m1[name]], mu=0.05, iters=2, alpha=0.9)
        assert torch.equal(got[name][:VOCAB], want) and torch.equal(got[name][VOCAB:], b[EMBED][VOCAB:])


def test_7b_layout_takes_the_longest_context(ck, tmp_path, caplog):
    """A 4096-position System 1 as tokenizer source: the merged config (otherwise the base's) has
    131072 positions, its tokenizer a model_max_length of 131072; both recorded."""
    with caplog.at_level(logging.WARNING, logger="l2s.merge.executor"):
        out = do_merge(ck, tmp_path, "task_arithmetic", ["slow128k"], base="base4k", params={"alpha": 0.7},
                       tokenizer_source=ck["base4k"])
    assert any("max_position_embeddings" in r.message and "131072" in r.message for r in caplog.records)
    cfg = config(out)
    assert cfg["max_position_embeddings"] == 131072 and cfg["eos_token_id"] == 5  # the rest is the base's
    assert cfg["tie_word_embeddings"] is False
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 131072
    context = record(out)["context"]
    assert context["max_position_embeddings"] == {"inputs": {ck["base4k"]: 4096, ck["slow128k"]: 131072},
                                                  "source": 4096, "output": 131072}
    assert context["model_max_length"] == {"source": 4096, "output": 131072}
    assert not context["rope"]["inputs_disagree"] and not context["sliding_window"]["inputs_disagree"]
    assert context["rope"]["source"] == config(ck["base4k"])["rope_parameters"]
    got, b, m = state(out), state(ck["base4k"]), state(ck["slow128k"])
    assert all(torch.equal(got[n], b[n] + 0.7 * (m[n] - b[n])) for n in b)
    assert transformers.AutoModelForCausalLM.from_pretrained(out).config.max_position_embeddings == 131072

    out = do_merge(ck, tmp_path, "task_arithmetic", ["slow128k"], base="base4k", params={"alpha": 0.7},
                   name="slow-source")
    assert config(out)["max_position_embeddings"] == 131072 and config(out)["eos_token_id"] == 7
    context = record(out)["context"]
    assert context["max_position_embeddings"]["source"] == context["max_position_embeddings"]["output"] == 131072
    assert context["model_max_length"] == {"source": 16384, "output": 131072}


def test_rope_and_sliding_window_disagreement_is_recorded(ck, tmp_path, caplog):
    """An input with another (legacy-keyed) rotary base and sliding-window attention: the merged
    config keeps the source's settings, the record lists each input's, a warning says so."""
    other = tmp_path / "other"
    shutil.copytree(ck["slow128k"], other)
    cfg = config(other)
    del cfg["rope_parameters"]
    cfg.update(rope_theta=1e6, rope_scaling={"type": "yarn", "factor": 4.0}, use_sliding_window=True,
               sliding_window=4096, max_window_layers=1)
    (other / "config.json").write_text(json.dumps(cfg))
    with caplog.at_level(logging.WARNING, logger="l2s.merge.executor"):
        out = merge(MergeConfig(method="task_arithmetic", base=ck["base4k"], models=[str(other)],
                                tokenizer_source=ck["base4k"], out=str(tmp_path / "out")))
    messages = " ".join(r.message for r in caplog.records)
    assert "rope settings differ" in messages and "sliding_window settings differ" in messages
    got, base = config(out), config(ck["base4k"])
    assert got["rope_parameters"] == base["rope_parameters"] and "rope_scaling" not in got
    assert got["use_sliding_window"] is False and got["max_position_embeddings"] == 131072
    context = record(out)["context"]
    assert context["rope"]["inputs"] == {ck["base4k"]: base["rope_parameters"],
                                         str(other): {"rope_theta": 1e6, "rope_type": "yarn", "factor": 4.0}}
    assert context["sliding_window"]["inputs"] == {
        ck["base4k"]: {"sliding_window": None, "max_window_layers": None},
        str(other): {"sliding_window": 4096, "max_window_layers": 1}}


def test_raised_context_keeps_a_scaled_rope_of_the_source(ck, tmp_path):
    """A YaRN source without original_max_position_embeddings: transformers would take the raised
    131072 for it; the merge pins the source's 4096, so the rotary frequencies stay the source's."""
    yarn = tmp_path / "yarn"
    shutil.copytree(ck["base4k"], yarn)
    cfg = config(yarn)
    cfg["rope_parameters"] = {"rope_theta": 10000.0, "rope_type": "yarn", "factor": 4.0}
    (yarn / "config.json").write_text(json.dumps(cfg))
    out = merge(MergeConfig(method="task_arithmetic", base=str(yarn), models=[ck["slow128k"]],
                            tokenizer_source=str(yarn), out=str(tmp_path / "out")))
    got = config(out)
    assert got["max_position_embeddings"] == 131072
    assert got["rope_parameters"] == {**cfg["rope_parameters"], "original_max_position_embeddings": 4096}
    assert record(out)["context"]["rope"]["pinned_original_max_position_embeddings"] == 4096
    source = transformers.AutoModelForCausalLM.from_pretrained(yarn).model.rotary_emb
    merged = transformers.AutoModelForCausalLM.from_pretrained(out).model.rotary_emb
    assert torch.equal(merged.inv_freq, source.inv_freq) and merged.attention_scaling == source.attention_scaling


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.jsonl"
    path.write_text("".join(json.dumps({"problem": t, "solution": "The answer is \\boxed{F}"}) + "\n" for t in TEXTS))
    return str(path)


def test_aim_ties_on_the_tied_layout(ck, tmp_path, calib):
    """AIM relaxes the TIES lm_head, merged from the tied base's embeddings, along lm_head's input channels."""
    out = do_merge(ck, tmp_path, "aim+ties", ["ft1"], base="tied", params={"k": 0.5, "omega": 0.3},
                   calibration=[calib])
    got, b, m1 = state(out), effective(ck["tied"]), state(ck["ft1"])
    scales = load_file(record(out)["stats"]["aim"]["path"])
    ties = METHODS["ties"].fn(b[HEAD], [m1[HEAD]], k=0.5, alpha=1.0)
    relax = 1 - aim_importance(scales[HEAD]) * (1 - 0.3)
    assert torch.allclose(got[HEAD], b[HEAD] + (ties - b[HEAD]) * relax, atol=1e-6)
    assert torch.equal(got[EMBED], METHODS["ties"].fn(b[EMBED], [m1[EMBED]], k=0.5, alpha=1.0))
    assert_untied_loadable(out, got)


def test_sens_on_the_tied_layout(ck, tmp_path, calib):
    """The tied base's lm_head sensitivity is that of its shared embedding parameter."""
    out = do_merge(ck, tmp_path, "sens", ["ft1"], base="tied", params={"alpha": 0.6, "T": 3.0}, calibration=[calib])
    rec = record(out)
    stats = json.loads(Path(rec["stats"]["sens"]["path"]).read_text())
    base_sens, ft_sens = stats["layer_sensitivity"]
    assert "lm_head" not in base_sens and "lm_head" in ft_sens  # transformers lists a tied weight once
    layers, coeffs = rec["sens"]["layers"], torch.tensor(rec["sens"]["coefficients"])
    assert "lm_head" in layers
    s = torch.tensor([[row.get(x, row["model.embed_tokens"] if x == "lm_head" else None) for x in layers]
                      for row in (base_sens, ft_sens)], dtype=torch.float64)
    assert torch.allclose(torch.tensor(rec["sens"]["task_scaling"], dtype=torch.float64),
                          s / s.norm(dim=1, keepdim=True))
    got, b, m1 = state(out), state(ck["tied"]), state(ck["ft1"])
    c = coeffs[1, layers.index("lm_head")].item()
    assert torch.allclose(got[HEAD], b[EMBED] + 0.6 * c * (m1[HEAD] - b[EMBED]), atol=1e-6)
    assert_untied_loadable(out, got)


def test_cpu_svds_are_unchanged(monkeypatch):
    """Without CUDA the SVD helpers compute exactly the formulas as written before the GPU path."""
    monkeypatch.setattr(svd, "svd_device", lambda: None)
    x = torch.randn(40, 24, generator=torch.Generator().manual_seed(0))
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    assert torch.equal(svd.svt(x, 0.5), (u * (s - 0.5).clamp_min(0)) @ vh)
    assert torch.equal(svd.truncate_rank(x, 3), (u[:, :3] * s[:3]) @ vh[:3])


def test_accelerator_svds_run_in_float32_and_come_back(monkeypatch):
    """The device path, here with the CPU standing in for CUDA: float32 SVDs, results in the input's dtype."""
    monkeypatch.setattr(svd, "svd_device", lambda: torch.device("cpu"))
    x = torch.randn(40, 24, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    u, s, vh = torch.linalg.svd(x.float(), full_matrices=False)
    out = svd.svt(x, 0.5)
    assert out.dtype == torch.bfloat16 and torch.equal(out, ((u * (s - 0.5).clamp_min(0)) @ vh).to(torch.bfloat16))
    out = svd.truncate_rank(x, 3)
    assert out.dtype == torch.bfloat16 and torch.equal(out, ((u[:, :3] * s[:3]) @ vh[:3]).to(torch.bfloat16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_svds_match_cpu(ck, tmp_path, monkeypatch):
    gpu = state(do_merge(ck, tmp_path, "lore", ["ft1", "ft2"], base="tied", params={"mu": 0.05, "iters": 3},
                         name="gpu"))
    assert svd.svd_device() is not None
    monkeypatch.setattr(svd, "svd_device", lambda: None)
    cpu = state(do_merge(ck, tmp_path, "lore", ["ft1", "ft2"], base="tied", params={"mu": 0.05, "iters": 3},
                         name="cpu"))
    assert all(torch.allclose(gpu[n], cpu[n], atol=1e-5) for n in cpu)
