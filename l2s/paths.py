"""Where l2s keeps what git must not (model checkpoints, caches), and where a model comes from."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """``$L2S_CACHE`` if set; else ``.cache/`` of the checkout l2s runs from (ignored by git);
    else ``~/.cache/l2s`` for an installed package. Relative to the working directory when it lies
    below it (:func:`portable`): the paths runs record (checkpoints, merges, calibration files) are
    then the same in every clone, and so are the cache keys made from them."""
    if env := os.environ.get("L2S_CACHE"):
        return portable(Path(env).expanduser().resolve())
    if (REPO_ROOT / "pyproject.toml").is_file():
        return portable(REPO_ROOT / ".cache")
    return Path.home() / ".cache" / "l2s"


def portable(path: str | os.PathLike) -> Path:
    """An absolute ``path`` below the working directory as a relative one; any other path as given."""
    path = Path(path)
    if path.is_absolute():
        try:
            return path.relative_to(Path.cwd())
        except ValueError:
            return path
    return path


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+")


def looks_like_hub_id(text: str) -> bool:
    """Whether ``text`` could be a hub repo id (``namespace/name``) rather than a path."""
    return bool(_HUB_ID.fullmatch(str(text))) and not str(text).startswith((".", "/", "~"))


def model_location(path_or_id: str | os.PathLike, what: str = "model") -> str:
    """``path_or_id`` as a local directory (resolved) or a hub id; a path that is neither is an error
    naming it: ``<what> directory X not found`` (not the hub's "Repo id must be in the form ...")."""
    text = str(path_or_id)
    p = Path(text).expanduser()
    if p.is_dir():
        return str(p)
    if p.exists():
        raise NotADirectoryError(f"{what} {p} is a file; expected a checkpoint directory")
    if looks_like_hub_id(text):
        return text
    raise FileNotFoundError(f"{what} directory {p} not found (nor is it a hub id such as Qwen/Qwen2.5-Math-7B); "
                            "check the path, or build it first")
