"""Calibration statistics for AIM and Sens-Merging, computed once with transformers and cached.

The cache lives next to the output, in ``<out>.stats/``, under a name derived from the hashes of the
models and the calibration files and the calibration settings, so a sweep over ω or T (or a rerun
after a crash) reuses it. Each statistics file appears atomically.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from l2s.io import atomic_write_bytes, atomic_write_json, read_json, read_jsonl
from l2s.provenance import config_hash

log = logging.getLogger(__name__)

PROMPT_KEYS = ("problem", "question", "prompt", "instruction")
ANSWER_KEYS = ("solution", "response", "completion", "answer", "output")


def load_texts(path: str | Path, tokenizer, max_samples: int) -> list[str]:
    """Calibration texts from a file: JSONL rows or one text per line of a plain text file.

    A JSONL row gives ``text``; or ``messages`` (a chat, rendered with the tokenizer's chat template);
    or a prompt (``problem``/``question``/``prompt``/``instruction``) and an answer
    (``solution``/``response``/``completion``/``answer``/``output``), rendered as a user/assistant chat
    when the tokenizer has a chat template, else joined by a newline. The first ``max_samples`` are used.
    """
    path = Path(path)
    if path.suffix != ".jsonl":
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        texts = []
        for i, row in enumerate(read_jsonl(path), 1):
            texts.append(_row_text(row, tokenizer, f"{path}:{i}"))
            if len(texts) >= max_samples:
                break
    if not texts:
        raise ValueError(f"calibration file {path} holds no texts")
    return texts[:max_samples]


def _row_text(row: dict, tokenizer, where: str) -> str:
    if isinstance(row.get("text"), str):
        return row["text"]
    if isinstance(row.get("messages"), list):
        return tokenizer.apply_chat_template(row["messages"], tokenize=False)
    prompt = next((row[k] for k in PROMPT_KEYS if isinstance(row.get(k), str)), None)
    answer = next((str(row[k]) for k in ANSWER_KEYS if row.get(k) is not None), None)
    if prompt is None or answer is None:
        raise ValueError(f"{where}: calibration row needs 'text', 'messages', or a prompt "
                         f"({'/'.join(PROMPT_KEYS)}) and an answer ({'/'.join(ANSWER_KEYS)})")
    if getattr(tokenizer, "chat_template", None):
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        return tokenizer.apply_chat_template(chat, tokenize=False)
    return f"{prompt}\n{answer}"


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(path: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    from l2s.tokenizers import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(_device()).eval()
    return model, load_tokenizer(path)


def _encode(tokenizer, text: str, max_tokens: int) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens,
                    add_special_tokens=False).input_ids
    if ids.shape[1] < 2:
        raise ValueError(f"calibration text too short to score: {text[:80]!r}")
    return ids.to(_device())


def _is_norm(module) -> bool:
    return isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


@torch.no_grad()
def activation_scales(model_path: Path, texts: list[str], max_tokens: int) -> dict[str, torch.Tensor]:
    """AIM statistics of a model: s = Σ_texts mean_tokens |x| per input channel of every linear and
    norm module (not embeddings), keyed by the module's weight name."""
    model, tok = _load(model_path)
    scales: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(module, args, output):
            x = args[0].detach().float()
            s = x.reshape(-1, x.shape[-1]).abs().mean(0).cpu()
            scales[name] = scales[name] + s if name in scales else s
        return fn

    handles = [m.register_forward_hook(hook(f"{n}.weight")) for n, m in model.named_modules()
               if (isinstance(m, torch.nn.Linear) or _is_norm(m)) and "embed" not in n]
    for text in texts:
        model(_encode(tok, text, max_tokens))
    for h in handles:
        h.remove()
    return scales


def layer_of(param_name: str) -> str:
    """The layer a parameter belongs to: its transformer block (``model.layers.3``), else its module."""
    m = re.match(r"^(.*?\.layers\.\d+)\.", param_name)
    return m.group(1) if m else param_name.rsplit(".", 1)[0]


def layer_sensitivities(model_path: Path, texts: list[str], max_tokens: int) -> dict[str, float]:
    """Sens-Merging S^l = mean over texts of Σ_{θ ∈ layer l} |θ ⊙ ∇_θ L| (L = the text's LM loss)."""
    model, tok = _load(model_path)
    totals: dict[str, float] = {}
    for text in texts:
        ids = _encode(tok, text, max_tokens)
        model.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                layer = layer_of(name)
                totals[layer] = totals.get(layer, 0.0) + float((p.detach() * p.grad).abs().sum())
    return {k: v / len(texts) for k, v in sorted(totals.items())}


@torch.no_grad()
def logit_distance(path_i: Path, path_j: Path, texts: list[str], max_tokens: int) -> float:
    """g_ij = mean over texts of the mean per-token L2 distance between the logits of two models."""
    model_i, tok = _load(path_i)
    model_j, _ = _load(path_j)
    total = 0.0
    for text in texts:
        ids = _encode(tok, text, max_tokens)
        li, lj = model_i(ids).logits.float(), model_j(ids).logits.float()
        v = min(li.shape[-1], lj.shape[-1])  # vocabularies may differ in padding rows
        total += float((li[..., :v] - lj[..., :v]).norm(dim=-1).mean())
    return total / len(texts)


def stats_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".stats")


def aim_stats(out, base_path: Path, base_hash: str, calibration: str, n: int, max_tokens: int,
              file_hash) -> tuple[dict[str, torch.Tensor], Path]:
    """AIM activation scales of the base model, from the cache or computed and cached."""
    from safetensors.torch import load_file, save

    key = config_hash({"kind": "aim", "base": base_hash, "calibration": file_hash(calibration), "n": n,
                       "max_tokens": max_tokens})
    path = stats_dir(out) / f"aim-{key}.safetensors"
    if path.is_file():
        log.info("AIM: reusing activation statistics %s", path)
        return load_file(path), path
    log.info("AIM: computing activation statistics of the base on %d texts of %s", n, calibration)
    scales = activation_scales(base_path, load_texts(calibration, _tokenizer(base_path), n), max_tokens)
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in scales.items()}))
    return scales, path


def _tokenizer(path: Path):
    from l2s.tokenizers import load_tokenizer

    return load_tokenizer(path)


def sens_stats(out, paths: list[Path], hashes: list[str], calibration: list[str], n: int, max_tokens: int,
               file_hash) -> tuple[dict, Path]:
    """Sens-Merging statistics of the merged models (each on its own calibration file): layer
    sensitivities S_i^l and logit distances g_ij; from the cache or computed and cached."""
    files = calibration * len(paths) if len(calibration) == 1 else list(calibration)
    key = config_hash({"kind": "sens", "models": hashes, "calibration": [file_hash(c) for c in files], "n": n,
                       "max_tokens": max_tokens})
    path = stats_dir(out) / f"sens-{key}.json"
    if path.is_file():
        log.info("Sens-Merging: reusing sensitivities %s", path)
        return read_json(path), path
    texts = [load_texts(c, _tokenizer(p), n) for p, c in zip(paths, files)]
    log.info("Sens-Merging: computing sensitivities of %d models", len(paths))
    sens = [layer_sensitivities(p, t, max_tokens) for p, t in zip(paths, texts)]
    g = [[0.0 if i == j else logit_distance(paths[i], paths[j], texts[j], max_tokens)
          for j in range(len(paths))] for i in range(len(paths))]
    stats = {"layer_sensitivity": sens, "logit_distance": g, "calibration": files}
    atomic_write_json(path, stats)
    return json.loads(path.read_text()), path
