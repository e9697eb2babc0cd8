"""Real-shaped stand-ins: tiny random Qwen2 pairs laid out like the papers' real model pairs.

No GPU and no hub weights are needed to run the real sizes' code path end to end: each stand-in
pair copies what of its real pair the code can trip over, and only shrinks the width and depth:

- the real **tokenizers** (Qwen2.5's for System 1, DeepSeek-R1-Distill-Qwen's for System 2: a path
  or hub id), with the real chat templates: ChatML with Qwen2.5-Math's default system prompt for
  System 1; R1's ``<｜begin▁of▁sentence｜>{system}<｜User｜>…<｜Assistant｜><think>\\n`` for System 2;
- the real **vocabulary rows** (151,936 at 1.5B, 152,064 from 7B up: more rows than tokens, as real);
- **tied or untied embeddings** as real: Qwen2.5-Math-1.5B ties them (no ``lm_head.weight``),
  R1-Distill-Qwen-1.5B does not, both untied from 7B up;
- the **contexts**: Qwen2.5-Math-1.5B/7B have 4,096 positions, R1-distill models and Qwen2.5-14B/32B
  131,072; RoPE θ 10⁴ (Math, R1 ≤ 7B) or 10⁶ (14B/32B); bf16 weights, eos/bos ids and generation
  configs as the real ones.

System 1's attention biases are drawn like its weights (real ones are not zero). System 2 is
System 1 plus a small random task vector (‖δ‖ ≈ ``delta`` × ‖θ₀‖ per tensor, its untied
``lm_head`` = System 1's embeddings + δ), so every merge has a base and a fine-tune to work on. The
weights are random: the text a stand-in writes means nothing; what is tested is that every step
runs and records what it should. Widths default to head_dim 32, the smallest vLLM's CPU attention
takes. The templates below are written out by hand (the shared tokenizers ship without them); they
render system / user / assistant turns exactly as the real templates do (tool calls left out).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from l2s import io, paths, provenance

log = logging.getLogger(__name__)

CARD = "l2s_standin.json"
ROLES = ("quick", "slow")

QWEN25_MATH_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nPlease reason step by step, and put your final answer within \\\\boxed{}."
    "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

R1_DISTILL_CHAT_TEMPLATE = (
    "{%- set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{%- set ns.system_prompt = message['content'] %}{%- endif %}"
    "{%- endfor %}"
    "{{- bos_token }}{{- ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- '<｜User｜>' + message['content'] }}{%- endif %}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- set content = message['content'] %}"
    "{%- if '</think>' in content %}{%- set content = content.split('</think>')[-1] %}{%- endif %}"
    "{{- '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<｜Assistant｜><think>\\n' }}{%- endif %}"
)

# Token ids of the real tokenizers (DeepSeek-R1-Distill-Qwen: added tokens 151643-151649).
QWEN_EOS = 151643  # <|endoftext|>
R1_BOS, R1_EOS = 151646, 151643  # <｜begin▁of▁sentence｜>, <｜end▁of▁sentence｜>
QWEN_TOKENIZER_HUB = {"1.5B": "Qwen/Qwen2.5-Math-1.5B", "7B": "Qwen/Qwen2.5-Math-7B", "14B": "Qwen/Qwen2.5-14B",
                      "32B": "Qwen/Qwen2.5-32B"}


@dataclass(frozen=True)
class ModelLayout:
    """What a stand-in copies of one real model."""

    stands_for: str  # the real model's hub id
    tokenizer: str  # "qwen2.5" or "r1"
    vocab_rows: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    rope_theta: float


@dataclass(frozen=True)
class PairLayout:
    size: str
    quick: ModelLayout
    slow: ModelLayout


def _pair(size: str, quick_id: str, rows: int, quick_tied: bool, quick_ctx: int, theta: float) -> PairLayout:
    return PairLayout(size, ModelLayout(quick_id, "qwen2.5", rows, quick_tied, quick_ctx, theta),
                      ModelLayout(f"deepseek-ai/DeepSeek-R1-Distill-Qwen-{size}", "r1", rows, False, 131072, theta))


# From the real checkpoints' config.json files.
LAYOUTS = {
    "qwen-1.5b": _pair("1.5B", "Qwen/Qwen2.5-Math-1.5B", 151936, True, 4096, 10000.0),
    "qwen-7b": _pair("7B", "Qwen/Qwen2.5-Math-7B", 152064, False, 4096, 10000.0),
    "qwen-14b": _pair("14B", "Qwen/Qwen2.5-14B", 152064, False, 131072, 1000000.0),
    "qwen-32b": _pair("32B", "Qwen/Qwen2.5-32B", 152064, False, 131072, 1000000.0),
}


@dataclass(frozen=True)
class StandinConfig:
    """A stand-in pair: the real layout it copies, its (tiny) widths, its tokenizers and seed.

    ``qwen_tokenizer`` / ``r1_tokenizer``: a directory or hub id of the real tokenizers (default: the
    real System-1 / System-2 models' own hub ids). ``max_position_embeddings`` overrides System 1's
    context (tests of the context cap); None keeps the real one.
    """

    layout: str
    qwen_tokenizer: str | None = None
    r1_tokenizer: str | None = None
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    intermediate_size: int = 128
    delta: float = 0.05  # ‖θ₁ − θ₀‖ / ‖θ₀‖ per tensor: the size of System 2's task vector
    seed: int = 0
    max_position_embeddings: int | None = None

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown stand-in layout {self.layout!r}; expected one of {', '.join(LAYOUTS)}")
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("hidden_size must divide into num_attention_heads, and those into num_key_value_heads")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")

    @property
    def pair(self) -> PairLayout:
        pair = LAYOUTS[self.layout]
        if self.max_position_embeddings is None:
            return pair
        return replace(pair, quick=replace(pair.quick, max_position_embeddings=self.max_position_embeddings))

    def tokenizer_source(self, role: str) -> str:
        if role == "quick":
            return self.qwen_tokenizer or self.pair.quick.stands_for
        return self.r1_tokenizer or self.pair.slow.stands_for


def _tokenizer_fingerprint(source: str) -> str:
    """SHA-256 over a local tokenizer's files (the hub id itself for a hub tokenizer)."""
    path = Path(source)
    if not path.is_dir():
        return source
    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file() and p.name.startswith(("tokenizer", "special", "vocab",
                                                                                       "merges", "added"))):
        h.update(f.name.encode() + b"\0" + provenance.file_sha256(f).encode())
    return h.hexdigest()


def fingerprint(cfg: StandinConfig) -> dict:
    return {"config": asdict(cfg), "pair": asdict(cfg.pair), "version": 1,
            "tokenizers": {r: _tokenizer_fingerprint(cfg.tokenizer_source(r)) for r in ROLES}}


def standin_dir(cfg: StandinConfig, cache: Path | None = None) -> Path:
    cache = Path(cache) if cache else paths.cache_dir()
    return cache / "standins" / f"{cfg.layout}-{provenance.config_hash(fingerprint(cfg))}"


def _tokenizer(layout: ModelLayout, source: str):
    from l2s.tokenizers import load_tokenizer

    tok = load_tokenizer(source)
    tok.chat_template = QWEN25_MATH_CHAT_TEMPLATE if layout.tokenizer == "qwen2.5" else R1_DISTILL_CHAT_TEMPLATE
    if layout.tokenizer == "r1" and tok.bos_token is None:
        raise ValueError(f"{source}: not an R1-distill tokenizer (no bos token <｜begin▁of▁sentence｜>)")
    return tok


def _qwen2_config(cfg: StandinConfig, layout: ModelLayout):
    from transformers import Qwen2Config

    r1 = layout.tokenizer == "r1"
    return Qwen2Config(
        vocab_size=layout.vocab_rows, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=layout.max_position_embeddings,
        rope_theta=layout.rope_theta, tie_word_embeddings=layout.tie_word_embeddings, sliding_window=4096,
        use_sliding_window=False, max_window_layers=cfg.num_hidden_layers, rms_norm_eps=1e-6,
        bos_token_id=QWEN_EOS, eos_token_id=R1_EOS if r1 else QWEN_EOS, dtype="bfloat16")


def _generation_config(layout: ModelLayout):
    from transformers import GenerationConfig

    if layout.tokenizer == "r1":  # R1-distill's own generation_config.json
        return GenerationConfig(bos_token_id=R1_BOS, eos_token_id=R1_EOS, do_sample=True, temperature=0.6,
                                top_p=0.95)
    return GenerationConfig(bos_token_id=QWEN_EOS, eos_token_id=QWEN_EOS, max_new_tokens=2048)


def build_standins(cfg: StandinConfig, cache: Path | None = None) -> dict[str, Path]:
    """Write (or reuse from the cache) the stand-in pair of ``cfg``; returns ``{quick, slow}`` dirs."""
    import torch
    from transformers import Qwen2ForCausalLM

    root = standin_dir(cfg, cache)
    out = {role: root / role for role in ROLES}
    if all((p / CARD).is_file() for p in out.values()):
        log.info("stand-ins %s: cached at %s", cfg.layout, root)
        return out
    pair = cfg.pair
    toks = {role: _tokenizer(getattr(pair, role), cfg.tokenizer_source(role)) for role in ROLES}
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    quick = Qwen2ForCausalLM(_qwen2_config(cfg, pair.quick)).to(torch.bfloat16)
    slow = Qwen2ForCausalLM(_qwen2_config(cfg, pair.slow)).to(torch.bfloat16)
    with torch.no_grad():  # real attention biases are not zero, and a zero tensor would get no task vector
        for name, p in quick.named_parameters():
            if name.endswith(".bias"):
                p.copy_((0.02 * torch.randn(p.shape, generator=gen)).to(p.dtype))
    theta0 = dict(quick.state_dict())
    if pair.quick.tie_word_embeddings:
        theta0["lm_head.weight"] = theta0["model.embed_tokens.weight"]
    with torch.no_grad():
        for name, p in slow.named_parameters():
            base = theta0[name].float()
            noise = torch.randn(base.shape, generator=gen)
            scale = cfg.delta * base.norm() / noise.norm().clamp_min(1e-12)
            p.copy_((base + scale * noise).to(p.dtype))
    models = {"quick": quick, "slow": slow}
    for role in ROLES:
        layout = getattr(pair, role)
        card = {"role": role, "layout": cfg.layout, "stands_for": layout.stands_for, "model_layout": asdict(layout),
                "tokenizer_source": cfg.tokenizer_source(role), "standin": asdict(cfg),
                "parameters": sum(p.numel() for p in models[role].parameters()),
                "fingerprint": provenance.config_hash(fingerprint(cfg)), "provenance": provenance.provenance(cfg.seed)}
        with io.atomic_output_dir(out[role], overwrite=True) as tmp:
            models[role].save_pretrained(tmp, safe_serialization=True)
            toks[role].save_pretrained(tmp)
            _generation_config(layout).save_pretrained(tmp)
            io.atomic_write_json(tmp / CARD, card)
    log.info("stand-ins %s written to %s", cfg.layout, root)
    return out


def register(sub) -> None:
    p = sub.add_parser("standins", help="tiny random Qwen2 pairs laid out like a real pair (no GPU needed)",
                       description="Write a real-shaped stand-in pair (System 1 and System 2) into the cache, "
                                   "or copy it to --out/{quick,slow}.")
    p.add_argument("--layout", required=True, choices=sorted(LAYOUTS))
    p.add_argument("--qwen-tokenizer", help="Qwen2.5 tokenizer: a directory or hub id (default: System 1's hub id)")
    p.add_argument("--r1-tokenizer", help="R1-distill tokenizer: a directory or hub id (default: System 2's hub id)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="copy the pair to OUT/quick and OUT/slow")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it holds another stand-in pair")
    p.set_defaults(func=run)


def run(args) -> int:
    import shutil

    cfg = StandinConfig(args.layout, qwen_tokenizer=args.qwen_tokenizer, r1_tokenizer=args.r1_tokenizer,
                        seed=args.seed)
    built = build_standins(cfg)
    if args.out is not None:
        cards = [args.out / r / CARD for r in ROLES]
        same = all(c.is_file() and io.read_json(c)["fingerprint"] == io.read_json(built[r] / CARD)["fingerprint"]
                   for r, c in zip(ROLES, cards))
        if not same:
            if args.out.exists() and not (args.overwrite and all(c.is_file() for c in cards)):
                raise FileExistsError(f"{args.out} exists and does not hold this stand-in pair; choose another "
                                      "--out (--overwrite replaces only a stand-in pair written by l2s)")
            with io.atomic_output_dir(args.out, overwrite=True) as tmp:
                for role in ROLES:
                    shutil.copytree(built[role], tmp / role)
        built = {r: args.out / r for r in ROLES}
    for role in ROLES:
        print(f"{role}\t{built[role]}")
    return 0
