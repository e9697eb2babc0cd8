"""Loading a checkpoint's tokenizer the way it was saved.

transformers 5 maps ``model_type: qwen2`` to ``Qwen2Tokenizer`` in ``AutoTokenizer`` whatever
``tokenizer_config.json`` declares, and ``Qwen2Tokenizer`` rebuilds a byte-level BPE from the vocabulary.
That is right for real Qwen checkpoints and garbles every other tokenizer saved with a Qwen2 model,
such as a word-level one (the toy world's first tokenizer: "2<>6 →6" came back as "266"). So l2s loads every tokenizer
here: a ``tokenizer.json`` whose model is not BPE is loaded as the ``PreTrainedTokenizerFast`` it was
saved as; anything else (hub ids, real Qwen/R1 tokenizers) goes through ``AutoTokenizer``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def saved_tokenizer_model(path: str | os.PathLike) -> str | None:
    """The ``model.type`` of a local ``tokenizer.json`` (``BPE``, ``WordLevel``, ...), or None."""
    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        return None
    try:
        with open(file, encoding="utf-8") as f:
            return (json.load(f).get("model") or {}).get("type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file}: unreadable tokenizer file ({e}); re-save the tokenizer") from e


def load_tokenizer(path_or_id: str | os.PathLike, **kwargs):
    """The tokenizer of a checkpoint directory or hub id, as it was saved (see the module docstring).
    A path that is neither a directory nor a hub id is an error naming it."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from l2s.paths import model_location

    path_or_id = model_location(path_or_id, "model (or tokenizer)")
    kind = saved_tokenizer_model(path_or_id) if Path(path_or_id).is_dir() else None
    if kind is not None and kind != "BPE":
        return PreTrainedTokenizerFast.from_pretrained(str(path_or_id), **kwargs)
    return AutoTokenizer.from_pretrained(str(path_or_id), **kwargs)
