"""AIM and Sens-Merging end to end: statistics computed with transformers, cached next to the output,
reused, and applied as their formulas say."""

import json

import pytest
import torch

from l2s.merge import MergeConfig, calibration, merge
from l2s.merge.methods.activation import aim_importance
from l2s.tokenizers import load_tokenizer

transformers = pytest.importorskip("transformers")
from test_merge import qwen2, save, state  # noqa: E402

TEXTS = ["Eight cups stand in a row . The ball is under cup C .", "Where is the ball ? The answer is \\boxed{F}"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    paths = {n: save(qwen2(i), root / n) for i, n in enumerate(["base", "m1"])}
    calib = root / "calib.jsonl"
    calib.write_text("".join(json.dumps({"problem": t, "solution": "The answer is \\boxed{F}"}) + "\n" for t in TEXTS))
    return paths, calib


def test_activation_scales_are_summed_mean_abs_inputs(world):
    paths, _ = world
    scales = calibration.activation_scales(paths["base"], TEXTS, 64)
    assert "model.layers.0.self_attn.q_proj.weight" in scales and "model.norm.weight" in scales
    assert "lm_head.weight" in scales and not any("embed" in k for k in scales)
    # the first layer norm sees the token embeddings: s = Σ_texts mean_tokens |E[ids]|
    model = transformers.AutoModelForCausalLM.from_pretrained(paths["base"])
    tok = load_tokenizer(paths["base"])
    want = sum(model.model.embed_tokens.weight[tok(t, add_special_tokens=False).input_ids].abs().mean(0) for t in TEXTS)
    assert torch.allclose(scales["model.layers.0.input_layernorm.weight"], want.detach(), atol=1e-6)


def test_aim_ties_relaxes_the_ties_merge_and_reuses_its_statistics(world, tmp_path, monkeypatch):
    paths, calib = world
    kw = dict(base=paths["base"], models=[paths["m1"]], calibration=[str(calib)])
    out = merge(MergeConfig(method="aim+ties", out=str(tmp_path / "aim"), params={"k": 0.5, "omega": 0.4}, **kw))
    ties = state(merge(MergeConfig(method="ties", out=str(tmp_path / "ties"), params={"k": 0.5},
                                   base=paths["base"], models=[paths["m1"]])))
    record = json.loads((out / "l2s_merge.json").read_text())
    stats_path = record["stats"]["aim"]["path"]
    assert stats_path.startswith(str(tmp_path / "aim.stats"))
    from safetensors.torch import load_file

    scales, got, base = load_file(stats_path), state(out), state(paths["base"])
    for name in ("model.layers.1.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"):
        relax = 1 - aim_importance(scales[name]) * (1 - 0.4)
        assert torch.allclose(got[name], base[name] + (ties[name] - base[name]) * relax, atol=1e-6)
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.bias"):
        assert torch.equal(got[name], ties[name])
    monkeypatch.setattr(calibration, "activation_scales", lambda *a: pytest.fail("statistics not reused"))
    # a rerun into the same target (a sweep over ω, or after a crash) reuses the cached statistics
    again = merge(MergeConfig(method="aim+ties", out=str(tmp_path / "aim"), overwrite=True,
                              params={"k": 0.5, "omega": 0.8}, **kw))
    assert json.loads((again / "l2s_merge.json").read_text())["stats"]["aim"]["path"] == stats_path


def test_sens_merging_layer_coefficients(world, tmp_path):
    paths, calib = world
    out = merge(MergeConfig(method="sens", base=paths["base"], models=[paths["m1"]], calibration=[str(calib)],
                            params={"alpha": 0.7, "T": 2.0}, out=str(tmp_path / "sens")))
    summary = json.loads((out / "l2s_merge.json").read_text())["sens"]
    coeffs = torch.tensor(summary["coefficients"])  # [participants, layers], K σ
    assert coeffs.shape == (2, len(summary["layers"]))
    assert torch.allclose(coeffs.sum(0), torch.full((coeffs.shape[1],), 2.0))
    got, base, m1 = state(out), state(paths["base"]), state(paths["m1"])
    j = summary["layers"].index("model.layers.1")
    name = "model.layers.1.self_attn.o_proj.weight"
    assert torch.allclose(got[name], base[name] + 0.7 * coeffs[1, j].item() * (m1[name] - base[name]), atol=1e-6)
    stats = json.loads(open(json.loads((out / "l2s_merge.json").read_text())["stats"]["sens"]["path"]).read())
    assert stats["logit_distance"][0][1] > 0 and all(v > 0 for v in stats["layer_sensitivity"][1].values())
