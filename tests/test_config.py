"""l2s.config: typed dataclasses from YAML/JSON files and flags; every error names the file, the key and
the expected type (issue 13 item 4, issue 14's wrong-type and dropped-preset cases)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from l2s.cli import build_parser, main
from l2s.config import ConfigError, check_fields, load_yaml, parse, read_file
from l2s.eval.run import EvalConfig
from l2s.merge.config import MergeConfig
from l2s.prefs.config import PairsConfig


@dataclass
class Step:
    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)
    always: bool = False


@dataclass
class Study:
    steps: list[Step]
    name: str = "study"
    kind: Literal["toy", "qwen"] = "toy"
    limit: int | None = None
    weight: float = 1.0


def error(cls, data, where="c.yaml") -> str:
    with pytest.raises(ConfigError) as e:
        parse(cls, data, where)
    return str(e.value)


MERGE = {"method": "ties", "models": ["m"], "base": "b", "out": "o"}


@pytest.mark.parametrize("cls, data, message", [
    (MergeConfig, {**MERGE, "overwrite": "false"}, "c.yaml: overwrite must be bool, got 'false' (str)"),
    (MergeConfig, {**MERGE, "seed": "3"}, "c.yaml: seed must be int, got '3' (str)"),
    (MergeConfig, {**MERGE, "seed": True}, "c.yaml: seed must be int, got True (bool)"),
    (MergeConfig, {**MERGE, "models": "a,b"}, "c.yaml: models must be list[str], got 'a,b' (str)"),
    (MergeConfig, {**MERGE, "models": ["a", 3]}, "c.yaml: models[1] must be str, got 3 (int)"),
    (MergeConfig, {**MERGE, "input_hash": "md5"}, "c.yaml: input_hash must be one of 'sampled', 'full', got 'md5'"),
    (PairsConfig, {"epsilon": "0.1"}, "c.yaml: epsilon must be float | null, got '0.1' (str)"),
    (PairsConfig, {"drop_both_zero": 0}, "c.yaml: drop_both_zero must be bool, got 0 (int)"),
    (EvalConfig, {"model": "m", "datasets": ["toy"], "out": "o", "sampling": {"n": "4"}},
     "c.yaml: sampling.n must be int, got '4' (str)"),
    (EvalConfig, {"model": "m", "datasets": ["toy"], "out": "o", "sampling": 4},
     "c.yaml: sampling must be a mapping of SamplingConfig fields, got 4 (int)"),
    (EvalConfig, {"model": "m", "datasets": ["toy"], "out": "o", "grading": {"workers": "2"}},
     "c.yaml: grading.workers must be int | null, got '2' (str)"),
    (Study, {"steps": [{"notebook": "a"}, {"notebook": "b", "parameters": [1]}]},
     "c.yaml: steps[1].parameters must be dict[str, Any], got [1] (list)"),
    (Study, {"steps": [{"notebook": "a", "always": "yes"}]}, "c.yaml: steps[0].always must be bool, got 'yes'"),
    (Study, {"steps": [], "kind": "llama"}, "c.yaml: kind must be one of 'toy', 'qwen', got 'llama' (str)"),
    (Study, {"steps": [], "limit": 2.5}, "c.yaml: limit must be int | null, got 2.5 (float)"),
    (Study, {"steps": "a.ipynb"}, "c.yaml: steps must be list[Step], got 'a.ipynb' (str)"),
])
def test_a_value_of_the_wrong_type_names_the_key_and_the_type(cls, data, message):
    assert message in error(cls, data)


def test_right_types_pass_and_are_the_dataclass_itself():
    study = parse(Study, {"steps": [{"notebook": "a", "parameters": {"k": 0.8}}], "weight": 2, "limit": None})
    assert study == Study(steps=[Step("a", {"k": 0.8})], weight=2.0)
    assert isinstance(study.steps[0], Step) and isinstance(study.weight, float)  # a float field takes an int
    cfg = parse(EvalConfig, {"model": "m", "datasets": ["gsm8k"], "out": "o", "prompt": "cot",
                             "sampling": {"temperature": 0.6, "n": 4, "stop": ["x"]}})
    assert cfg.datasets == ("gsm8k",) and cfg.sampling.stop == ("x",) and cfg.sampling.n == 4
    assert parse(MergeConfig, {**MERGE, "shard_size": 1000}).shard_size == 1000  # int | str


def test_unknown_and_missing_keys_are_named_with_the_allowed_ones():
    msg = error(MergeConfig, {**MERGE, "sed": 1, "colour": "red"})
    assert "c.yaml: unknown key(s) ['sed', 'colour']: 'sed' (did you mean 'seed'?); allowed: method, models, out" in msg
    msg = error(Study, {"steps": [{"notebook": "a", "paramters": {}}]})
    assert "c.yaml: steps[0]: unknown key(s) ['paramters']: 'paramters' (did you mean 'parameters'?)" in msg
    assert "c.yaml: missing key(s) method (str), out (str)" in error(MergeConfig, {"models": ["m"]})
    assert "c.yaml: steps[0]: missing key(s) notebook (str)" in error(Study, {"steps": [{}]})
    assert "c.yaml: expected a mapping of Study fields, got [] (list)" in error(Study, [])


def test_the_dataclass_checks_still_run_and_are_prefixed():
    assert error(PairsConfig, {"m1": 0}) == "c.yaml: m1 must be an integer >= 1, got 0"
    assert error(EvalConfig, {"model": "m", "datasets": ["toy"], "out": "o", "sampling": {"temperature": -1}}) == \
        "c.yaml: sampling: temperature must be >= 0, got -1.0"


def test_yaml_and_json_files(tmp_path):
    good = tmp_path / "p.yaml"
    good.write_text("variant: group\nm1: 2\nepsilon: 5e-2\n")
    assert load_yaml(PairsConfig, good) == PairsConfig(variant="group", m1=2, epsilon=0.05)  # 5e-2: a float
    (tmp_path / "p.json").write_text('{"m2": 3}')
    assert load_yaml(PairsConfig, tmp_path / "p.json").m2 == 3
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(PairsConfig, tmp_path / "empty.yaml") == PairsConfig()
    good.write_text("variant: group\nm1: '2'\n")
    with pytest.raises(ConfigError, match=r"p.yaml: m1 must be int, got '2' \(str\)"):
        load_yaml(PairsConfig, good)


@pytest.mark.parametrize("name, content, message", [
    ("bad.yaml", b"variant: group\nm1: [1, 2\n", r"bad.yaml:3:1: not valid YAML \(while parsing a flow sequence"),
    ("tab.yaml", b"a: 1\n\tb: 2\n", r"tab.yaml:2:1: not valid YAML"),
    ("latin1.yaml", b"variant: group\nnote: caf\xe9\n", r"latin1.yaml:2: not UTF-8 text \(byte 0xe9\)"),
    ("bad.json", b'{"m1": 2,\n "m2": }', r"bad.json:2:8: not valid JSON \(Expecting value\)"),
    ("list.yaml", b"- m1\n- m2\n", r"list.yaml: expected a mapping of key: value, got list"),
    ("twice.yaml", b"m1: 2\nm2: 1\nm1: 3\n",
     r"twice.yaml:3:1: not valid YAML \(key 'm1' given twice \(lines 1 and 3\)"),
])
def test_unreadable_files_name_the_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        read_file(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="config file .*nowhere.yaml not found"):
        read_file(tmp_path / "nowhere.yaml")


def test_cli_flags_override_the_file_and_bad_values_exit_2(tmp_path, capsys):
    from l2s.eval.cli import eval_config_from_args
    from l2s.merge.cli import config_from_args

    cfg = tmp_path / "m.yaml"
    cfg.write_text("method: ties\nbase: b\nmodels: [m1, m2]\nout: o\nseed: 1\nparams: {k: 0.5, alpha: 1.0}\n")
    args = build_parser().parse_args(["merge", "--config", str(cfg), "--seed", "2", "--models", "x,y",
                                      "--param", "k=0.8", "--overwrite", "--input-hash", "full"])
    merged = config_from_args(args)
    assert (merged.seed, merged.models, merged.params, merged.overwrite, merged.input_hash, merged.method) == \
        (2, ["x", "y"], {"k": 0.8, "alpha": 1.0}, True, "full", "ties")
    assert config_from_args(build_parser().parse_args(["merge", "--config", str(cfg), "--overwrite", "false"])) \
        .overwrite is False
    assert not hasattr(build_parser().parse_args(["merge"]), "seed")  # a flag not given sets nothing

    cfg.write_text("model: m\ndatasets: [toy]\nout: o\nsampling: {n: 4, temperature: 0.6}\nlimit: 5\n")
    ev = eval_config_from_args(build_parser().parse_args(["eval", "--config", str(cfg), "--n", "8", "--limit", "7"]))
    assert (ev.sampling.n, ev.sampling.temperature, ev.limit) == (8, 0.6, 7)

    cfg.write_text("method: ties\nbase: b\nmodels: [m]\nout: o\noverwrite: 'false'\n")
    assert main(["merge", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"l2s merge: error: {cfg}: overwrite must be bool, got 'false' (str)"
    with pytest.raises(SystemExit, match="2"):  # a flag's type is the field's (HfArgumentParser)
        main(["pairs", "--long", "a", "--short", "b", "--out", str(tmp_path / "p"), "--m1", "x"])
    assert "--m1: invalid int value: 'x'" in capsys.readouterr().err


def test_dpo_preset_from_the_file_is_honoured_and_checked_against_trl(tmp_path, capsys):
    from l2s.dpo.cli import config_from_args

    def config(*flags):
        return config_from_args(build_parser().parse_args(["dpo", "--model", "m", "--pairs", "p", "--out", "o",
                                                           *flags]))

    cfg = tmp_path / "dpo.yaml"
    cfg.write_text("preset: adar1-1.5b\nlearning_rate: 5e-6\nmax_steps: 3\n")
    c = config("--config", str(cfg))
    assert (c.preset, c.args["beta"], c.args["learning_rate"], c.args["max_steps"]) == ("adar1-1.5b", 0.05, 5e-6, 3)
    c = config("--config", str(cfg), "--preset", "toy", "--beta", "0.2", "--bf16", "--save-dtype", "bfloat16")
    assert (c.preset, c.args["beta"], c.args["bf16"], c.args["learning_rate"], c.save_dtype) == \
        ("toy", 0.2, True, 5e-6, "bfloat16")
    assert config().preset == "toy"
    cfg.write_text("preset: wu-dpo\nbeta: high\n")
    with pytest.raises(ConfigError, match=r"dpo.yaml: beta must be float, got 'high' \(str\)"):
        config("--config", str(cfg))
    cfg.write_text("preset: wu-dpo\nbf16: 'false'\nlora: {r: 8.5}\n")
    with pytest.raises(ConfigError, match=r"dpo.yaml: bf16 must be bool \| null, got 'false'"):
        config("--config", str(cfg))
    cfg.write_text("preset: wu-dpo\nlora: {r: 8.5}\n")
    with pytest.raises(ConfigError, match=r"dpo.yaml: lora.r must be int, got 8.5 \(float\)"):
        config("--config", str(cfg))
    cfg.write_text("preset: wu-dpo\nwarmup_ratio: 0.1\n")
    assert main(["dpo", "--model", "m", "--pairs", "p", "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "unknown key(s) ['warmup_ratio']: 'warmup_ratio' (did you mean 'warmup_steps'?)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"--set loss_type: '\[sigmoid' is not a YAML value"):
        config("--set", "loss_type=[sigmoid")


def test_check_fields_checks_keyword_arguments_without_building():
    assert check_fields(Step, {"notebook": "a"}) == {"notebook": "a"}
    with pytest.raises(ConfigError, match=r"x.yaml: opts.always must be bool, got 'no' \(str\)"):
        check_fields(Step, {"always": "no"}, "x.yaml", key="opts")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['notbook'\]: 'notbook' \(did you mean 'notebook'\?\)"):
        check_fields(Step, {"notbook": "a"})


def test_sft_preset_from_the_file_and_typed_options(tmp_path):
    from l2s.sft import config_from_args, preset_config

    def config(*flags):
        return config_from_args(build_parser().parse_args(["sft", "--model", "m", "--data", "d", "--out", "o",
                                                           *flags]))

    cfg = tmp_path / "sft.yaml"
    cfg.write_text("preset: short-cot\nmax_steps: 2\n")
    c = config("--config", str(cfg), "--lora", "--learning-rate", "0.01")
    assert (c.preset, c.max_steps, c.lora, c.learning_rate, c.bf16) == ("short-cot", 2, True, 0.01, True)
    assert config("--config", str(cfg), "--preset", "toy").preset == "toy" and config().preset == "toy"
    cfg.write_text("preset: short-cot\nwarmup: ten\n")
    with pytest.raises(ConfigError, match=r"sft.yaml: warmup must be float, got 'ten' \(str\)"):
        config("--config", str(cfg))
    with pytest.raises(ConfigError, match=r"options: lora must be bool, got 'yes' \(str\)"):
        preset_config("toy", lora="yes")


def test_building_the_cli_imports_neither_transformers_nor_torch():
    code = "import sys; from l2s.cli import build_parser; build_parser(); print(sorted({'torch', 'transformers'} " \
           "& set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
