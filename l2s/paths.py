"""Where l2s keeps what git must not: model checkpoints and other caches."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """``$L2S_CACHE`` if set; else ``.cache/`` of the checkout l2s runs from (ignored by git);
    else ``~/.cache/l2s`` for an installed package."""
    if env := os.environ.get("L2S_CACHE"):
        return Path(env).expanduser().resolve()
    if (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT / ".cache"
    return Path.home() / ".cache" / "l2s"
