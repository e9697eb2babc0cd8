"""Calibration statistics for AIM and Sens-Merging, computed once with transformers and cached.

The cache lives next to the output, in ``<out>.stats/``, under a name derived from the hashes of the
models and the calibration files and the calibration settings, so a sweep over ω or T (or a rerun
after a crash) reuses it. Each statistics file appears atomically.

Each text is cut to its first ``max_tokens`` tokens (``MergeConfig.calibration_max_tokens``, 2048 by
default, which cuts many of s1K's long traces). How many texts were cut is logged and recorded in the
statistics file (``truncation``), so a result computed on cut texts says so. AIM's default framing is
its reference's instead (:func:`calibration_blocks`): texts concatenated and cut into blocks of 512
tokens, texts longer than a block skipped (then ``truncation`` counts the skipped texts).

Memory, designed for one 80 GB GPU (sequences of at most 2048 tokens; 7B = Qwen2.5-7B's layout, 7.6 B
parameters, 28 layers, vocabulary 152064; 14B = Qwen2.5-14B's, 14.8 B parameters, 48 layers):

- Sens-Merging sensitivities (:func:`layer_sensitivities`): the model in bf16 on CUDA (2 B/param: 15.2 GB
  at 7B, 29.5 GB at 14B). No gradient is kept: each parameter's Σ|θ ⊙ ∇θ| is added to its layer's
  float64 total as soon as autograd has produced its gradient, which is then freed, so about one
  parameter's gradient is alive at a time (at most the 1.1 / 1.6 GB embedding or output matrix).
  Autograd saves about 220 KB per token per decoder layer in bf16 (measured on CPU from the tensors
  it saves, sdpa attention, both layer shapes): 12.6 GB at 7B, 21 GB at 14B for 2048 tokens. With
  activation checkpointing (on by default on CUDA) that shrinks to the layer inputs plus one layer
  recomputed (≈ 1 / 1.5 GB). The logits, their fp32 loss and its gradient add ≈ 4 GB. Peak ≈ 21 GB at
  7B and ≈ 37 GB at 14B (without checkpointing ≈ 33 / 56 GB). The earlier pass kept fp32 weights and
  gradients (61 GB at 7B, 118 GB at 14B) plus fp32 activations.
- Sens-Merging logit distances (:func:`logit_distance`) need both models' logits on the same text, so
  both models are held, in bf16 on CUDA, without gradients: 30.4 GB at 7B, 59 GB at 14B, plus ≈ 5 GB
  of logits and their fp32 difference.
- AIM activation scales (:func:`activation_scales`): one model in fp32 without gradients, 30.5 GB at 7B,
  59 GB at 14B.

On CPU every model is fp32, as before. The dtype used is recorded in the Sens statistics file and is
part of its cache key.
"""

from __future__ import annotations

import gc
import json
import logging
import re
from pathlib import Path

import torch

from l2s.io import atomic_write_bytes, atomic_write_json, read_json, read_jsonl, read_text
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
        texts = [line for line in read_text(path).splitlines() if line.strip()]
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


def sens_dtype() -> torch.dtype:
    """The dtype of the Sens-Merging passes: bf16 on CUDA (the memory budget above), fp32 on CPU."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def _load(path: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    from l2s.tokenizers import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(_device()).eval()
    return model, load_tokenizer(path)


def _release() -> None:
    """Give the memory of models just dropped back to the GPU before the next one is loaded."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def _encode(tokenizer, text: str, max_tokens: int) -> torch.Tensor:
    """The text's token ids, cut to the first ``max_tokens``, as a batch of one on the device."""
    ids = _token_ids(tokenizer, text)[:max_tokens]
    if len(ids) < 2:
        raise ValueError(f"calibration text too short to score: {text[:80]!r}")
    return torch.tensor([ids], device=_device())


def truncation(tokenizer, texts: list[str], max_tokens: int) -> dict[str, int]:
    """How many of ``texts`` are longer than ``max_tokens`` tokens (and so are cut), and the longest."""
    lengths = [len(_token_ids(tokenizer, t)) for t in texts]
    return {"texts": len(texts), "truncated": sum(n > max_tokens for n in lengths), "max_tokens": max_tokens,
            "longest": max(lengths)}


def _log_truncation(what: str, calibration: str, cut: dict | None) -> None:
    if not cut:
        return
    if cut["truncated"]:
        log.warning("%s: %d of %d calibration texts of %s are longer than calibration_max_tokens=%d "
                    "(longest %d tokens) and were cut to their first %d tokens", what, cut["truncated"],
                    cut["texts"], calibration, cut["max_tokens"], cut["longest"], cut["max_tokens"])
    else:
        log.info("%s: all %d calibration texts of %s fit calibration_max_tokens=%d (longest %d tokens)",
                 what, cut["texts"], calibration, cut["max_tokens"], cut["longest"])


def _is_norm(module) -> bool:
    return isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


def calibration_blocks(tokenizer, texts: list[str], block_tokens: int) -> tuple[list[list[int]], dict]:
    """AIM's reference framing (``get_calib_dataset`` of github.com/ahnobari/ActivationInformedMerging):
    texts longer than a block are skipped, the others tokenized, concatenated and cut into blocks of
    ``block_tokens`` tokens, the last partial block dropped. When the kept texts hold less than one
    block (tiny test sets), they form one shorter block. Returns the blocks and what was done."""
    ids = [_token_ids(tokenizer, t) for t in texts]
    kept = [x for x in ids if len(x) <= block_tokens]
    flat = [t for x in kept for t in x]
    n_blocks = len(flat) // block_tokens
    blocks = [flat[i * block_tokens:(i + 1) * block_tokens] for i in range(n_blocks)]
    short = not blocks and len(flat) >= 2
    if short:
        blocks = [flat]
    if not blocks:
        raise ValueError(f"no calibration block: {len(texts) - len(kept)} of {len(texts)} texts are longer than "
                         f"{block_tokens} tokens and the others hold {len(flat)} tokens")
    record = {"framing": "blocks", "block_tokens": block_tokens, "texts": len(texts),
              "skipped_longer_than_block": len(texts) - len(kept), "tokens": len(flat), "blocks": len(blocks),
              "dropped_tail_tokens": 0 if short else len(flat) - n_blocks * block_tokens,
              "single_short_block": short}
    return blocks, record


@torch.no_grad()
def activation_scales(model_path: Path, texts: list, max_tokens: int) -> dict[str, torch.Tensor]:
    """AIM statistics of a model: s = Σ_inputs mean_tokens |x| per input channel of every linear and
    norm module (not embeddings), keyed by the module's weight name. An input is a text (cut to
    ``max_tokens``) or a block of token ids (:func:`calibration_blocks`)."""
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
    for x in texts:
        ids = _encode(tok, x, max_tokens) if isinstance(x, str) else torch.tensor([x], device=_device())
        model(ids, use_cache=False)
    for h in handles:
        h.remove()
    del model
    _release()
    return scales


def layer_of(param_name: str) -> str:
    """The layer a parameter belongs to: its transformer block (``model.layers.3``), else its module."""
    m = re.match(r"^(.*?\.layers\.\d+)\.", param_name)
    return m.group(1) if m else param_name.rsplit(".", 1)[0]


def layer_sensitivities(model_path: Path, texts: list[str], max_tokens: int, dtype: torch.dtype | None = None,
                        gradient_checkpointing: bool | None = None) -> dict[str, float]:
    """Sens-Merging S^l = mean over texts of Σ_{θ ∈ layer l} |θ ⊙ ∇_θ L| (L = the text's LM loss).

    The model is loaded in ``dtype`` (default :func:`sens_dtype`); ``gradient_checkpointing`` (default:
    on CUDA) recomputes each decoder layer in the backward pass instead of keeping its activations.
    """
    model, tok = _load(model_path, dtype or sens_dtype())
    if gradient_checkpointing is None:
        gradient_checkpointing = torch.cuda.is_available()
    if gradient_checkpointing:
        _checkpoint_layers(model)
    result = sensitivities(model, tok, texts, max_tokens)
    del model
    _release()
    return result


def sensitivities(model, tokenizer, texts: list[str], max_tokens: int) -> dict[str, float]:
    """S^l of a loaded model, without keeping gradients.

    A post-accumulate-grad hook on every parameter adds |θ ⊙ ∇θ| of the text's backward pass to its
    layer's float64 total the moment the gradient is complete, and frees the gradient, so no ``.grad``
    outlives its parameter's hook and none is left after the pass.
    """
    totals: dict[str, torch.Tensor] = {}

    def hook(layer):
        def fn(p):
            s = _abs_product_sum(p.detach(), p.grad)
            totals[layer] = totals[layer] + s if layer in totals else s
            p.grad = None
        return fn

    handles = [p.register_post_accumulate_grad_hook(hook(layer_of(name)))
               for name, p in model.named_parameters() if p.requires_grad]
    try:
        for text in texts:
            ids = _encode(tokenizer, text, max_tokens)
            model(ids, labels=ids, use_cache=False).loss.backward()
    finally:
        for h in handles:
            h.remove()
    return {k: float(v) / len(texts) for k, v in sorted(totals.items())}


def _abs_product_sum(p: torch.Tensor, g: torch.Tensor, chunk: int = 1 << 24) -> torch.Tensor:
    """Σ|p ⊙ g| in float64, multiplied in fp32 one chunk of 16M entries at a time (bounded scratch)."""
    p, g = p.reshape(-1), g.reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=p.device)
    for start in range(0, p.numel(), chunk):
        part = p[start:start + chunk].float() * g[start:start + chunk].float()
        total += part.abs().sum(dtype=torch.float64)
    return total


def _checkpoint_layers(model) -> None:
    """Turn on non-reentrant activation checkpointing of the decoder layers.

    transformers checkpoints a layer only when it is in training mode; only the layer modules
    themselves are flagged as training, so their children (attention, dropout) stay in eval mode
    and the loss is the eval-mode loss.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    for m in model.modules():
        if isinstance(m, GradientCheckpointingLayer):
            m.training = True


@torch.no_grad()
def logit_distance(path_i: Path, path_j: Path, texts: list[str], max_tokens: int,
                   dtype: torch.dtype | None = None) -> float:
    """g_ij = mean over texts of the mean per-token L2 distance between the logits of two models.

    Both models are held at once (in ``dtype``, default :func:`sens_dtype`); the logits are compared in fp32.
    """
    dtype = dtype or sens_dtype()
    model_i, tok = _load(path_i, dtype)
    model_j, _ = _load(path_j, dtype)
    total = 0.0
    for text in texts:
        ids = _encode(tok, text, max_tokens)
        li, lj = model_i(ids, use_cache=False).logits, model_j(ids, use_cache=False).logits
        v = min(li.shape[-1], lj.shape[-1])  # vocabularies may differ in padding rows
        total += float((li[..., :v].float() - lj[..., :v].float()).norm(dim=-1).mean())
    del model_i, model_j
    _release()
    return total / len(texts)


def stats_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".stats")


def aim_stats(out, base_path: Path, base_hash: str, calibration: str, n: int, max_tokens: int,
              file_hash, framing: str = "blocks", block_tokens: int = 512) -> tuple[dict[str, torch.Tensor], Path]:
    """AIM activation scales of the base model, from the cache or computed and cached. ``framing``:
    ``"blocks"`` (the reference's, :func:`calibration_blocks`; the block capped at the base's
    ``max_position_embeddings``) or ``"texts"`` (one forward pass per text, cut to ``max_tokens``). The
    file's metadata (``l2s``, JSON) records the dtype, the framing and the truncation of the texts."""
    from safetensors.torch import load_file, save

    if framing not in ("blocks", "texts"):
        raise ValueError(f"AIM calibration framing {framing!r}: expected 'blocks' or 'texts'")
    settings = {"kind": "aim", "base": base_hash, "calibration": file_hash(calibration), "n": n,
                "max_tokens": max_tokens}
    if framing == "blocks":
        positions = read_json(Path(base_path) / "config.json").get("max_position_embeddings")
        block_tokens = min(block_tokens, positions) if isinstance(positions, int) else block_tokens
        settings = {**settings, "max_tokens": None, "framing": framing, "block_tokens": block_tokens}
    path = stats_dir(out) / f"aim-{config_hash(settings)}.safetensors"
    if path.is_file():
        log.info("AIM: reusing activation statistics %s", path)
        meta = aim_metadata(path)
        if framing == "texts":
            _log_truncation("AIM", calibration, meta.get("truncation"))
        return load_file(path), path
    log.info("AIM: computing activation statistics of the base on %d texts of %s (%s)", n, calibration, framing)
    tok = _tokenizer(base_path)
    texts = load_texts(calibration, tok, n)
    if framing == "blocks":
        inputs, framed = calibration_blocks(tok, texts, block_tokens)
        cut = truncation(tok, texts, block_tokens)
        log.info("AIM: %d blocks of %d tokens from %d texts of %s (%d longer than a block, skipped)",
                 framed["blocks"], block_tokens, len(texts), calibration, framed["skipped_longer_than_block"])
    else:
        inputs, cut = texts, truncation(tok, texts, max_tokens)
        framed = {"framing": "texts", "max_tokens": max_tokens, "texts": len(texts)}
        _log_truncation("AIM", calibration, cut)
    scales = activation_scales(base_path, inputs, max_tokens)
    meta = {"calibration": calibration, "dtype": "float32", "truncation": cut, "framing": framed}
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in scales.items()},
                                  metadata={"l2s": json.dumps(meta, sort_keys=True)}))
    return scales, path


def aim_metadata(path: str | Path) -> dict:
    """What :func:`aim_stats` recorded in an AIM statistics file (empty for files written before)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads((f.metadata() or {}).get("l2s", "{}"))


def _tokenizer(path: Path):
    from l2s.tokenizers import load_tokenizer

    return load_tokenizer(path)


def sens_stats(out, paths: list[Path], hashes: list[str], calibration: list[str], n: int, max_tokens: int,
               file_hash) -> tuple[dict, Path]:
    """Sens-Merging statistics of the merged models (each on its own calibration file): layer
    sensitivities S_i^l and logit distances g_ij; from the cache or computed and cached. The file also
    records the dtype of the passes and, per model, the truncation of its texts by its tokenizer
    (g_ij reads model j's texts)."""
    files = calibration * len(paths) if len(calibration) == 1 else list(calibration)
    dtype = str(sens_dtype()).removeprefix("torch.")
    key = config_hash({"kind": "sens", "models": hashes, "calibration": [file_hash(c) for c in files], "n": n,
                       "max_tokens": max_tokens, "dtype": dtype})
    path = stats_dir(out) / f"sens-{key}.json"
    if path.is_file():
        log.info("Sens-Merging: reusing sensitivities %s", path)
        stats = read_json(path)
        for f, cut in zip(files, stats.get("truncation", [])):
            _log_truncation("Sens-Merging", f, cut)
        return stats, path
    toks = [_tokenizer(p) for p in paths]
    texts = [load_texts(c, tok, n) for tok, c in zip(toks, files)]
    cuts = [truncation(tok, t, max_tokens) for tok, t in zip(toks, texts)]
    for f, cut in zip(files, cuts):
        _log_truncation("Sens-Merging", f, cut)
    log.info("Sens-Merging: computing sensitivities of %d models in %s", len(paths), dtype)
    checkpointing = torch.cuda.is_available()
    sens = [layer_sensitivities(p, t, max_tokens, gradient_checkpointing=checkpointing) for p, t in zip(paths, texts)]
    g = [[0.0 if i == j else logit_distance(paths[i], paths[j], texts[j], max_tokens)
          for j in range(len(paths))] for i in range(len(paths))]
    stats = {"layer_sensitivity": sens, "logit_distance": g, "calibration": files, "dtype": dtype,
             "gradient_checkpointing": checkpointing, "truncation": cuts}
    atomic_write_json(path, stats)
    return json.loads(path.read_text()), path
