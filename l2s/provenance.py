"""What every run records about how it was made: config, seed, package versions, git commit, device."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from l2s import __version__

PACKAGES = (
    "torch", "transformers", "tokenizers", "safetensors", "accelerate", "datasets", "trl", "peft",
    "math-verify", "numpy", "pandas", "matplotlib", "seaborn", "papermill", "vllm",
)


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """The commit of the l2s checkout (and whether its tracked files are modified)."""
    repo = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                    capture_output=True, text=True, check=True, timeout=10).stdout.strip())
        return {"commit": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": sys.version.split()[0],
                            "cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


def provenance(seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """Everything needed to tell how an output was made, besides its own config."""
    return {"l2s_version": __version__, "seed": seed, "git": git_commit(),
            "packages": package_versions(), "device": device_info(), "argv": sys.argv, **extra}


def config_hash(obj: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-able config (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# The records l2s leaves in a checkpoint it wrote (merge, DPO, SFT, stand-in, toy training card).
CHECKPOINT_RECORDS = ("l2s_merge.json", "l2s_train.json", "l2s_sft.json", "l2s_standin.json", "l2s_toy_card.json")


def checkpoint_record(model: str | os.PathLike) -> dict[str, Any]:
    """What identifies an input model of a training run: its path or hub id and, for a local
    checkpoint, the SHA-256 of its config, weight index (or single weights file under 2 GiB) and of
    the l2s records it carries."""
    path = Path(model)
    info: dict[str, Any] = {"path": str(model)}
    if path.is_dir():
        for name in ("config.json", "model.safetensors.index.json", "model.safetensors", *CHECKPOINT_RECORDS):
            if (path / name).is_file() and (path / name).stat().st_size < 2**31:
                info[f"sha256:{name}"] = file_sha256(path / name)
    return info


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
