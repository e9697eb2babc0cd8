"""Where a merge lives in the cache: the one key for every caller (the study's merge notebook, Ada-R1).

``cache_dir()/merged/<name>-<key>``, with ``key`` the hash of the merge's fields (method, params, seed,
dtype, ...) in which every input model is replaced by its :func:`l2s.provenance.checkpoint_record`
(path plus digests of its config, weights index and l2s records) and every calibration file by its
digest: a rebuilt input or an edited calibration file gets a new merge, the same inputs reuse it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from l2s import paths
from l2s.provenance import checkpoint_record, config_hash, file_sha256


def merge_key(fields: dict[str, Any]) -> str:
    """The hash of a merge's fields with its inputs identified by content (see the module docstring)."""
    ident = dict(fields)
    if ident.get("base"):
        ident["base"] = checkpoint_record(ident["base"])
    ident["models"] = [checkpoint_record(m) for m in ident.get("models", [])]
    ident["calibration"] = [{"path": str(c), "sha256": file_sha256(c) if Path(c).is_file() else None}
                            for c in ident.get("calibration") or []]
    return config_hash(ident)


def merged_path(name: str, fields: dict[str, Any]) -> Path:
    """``cache_dir()/merged/<name>-<merge_key(fields)>``."""
    return paths.cache_dir() / "merged" / f"{name}-{merge_key(fields)}"
