"""The toy model family: Qwen2ForCausalLM configurations of a few sizes, and their training recipes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from l2s.toy import tokenizer as toy_tokenizer


@dataclass(frozen=True)
class ToySize:
    """Architecture of one toy size (a real ``Qwen2Config``, only small)."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int = 4
    num_key_value_heads: int = 2

    def qwen2_config(self):
        from transformers import Qwen2Config

        tok = toy_tokenizer.build_tokenizer()
        return Qwen2Config(
            vocab_size=len(tok), hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads, max_position_embeddings=256,
            rope_theta=10000.0, tie_word_embeddings=True, use_cache=True,
            bos_token_id=tok.convert_tokens_to_ids(toy_tokenizer.BOS_CHAT),
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )


@dataclass(frozen=True)
class Stage:
    """One training stage: which response styles (with weights), how long, how fast."""

    styles: dict[str, float]
    steps: int
    lr: float
    batch_size: int = 64
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    easy_first: float = 0.0  # fraction of the steps that see only levels <= easy_max_level (curriculum)
    easy_max_level: int = 2


@dataclass(frozen=True)
class Recipe:
    """quick = from scratch on direct answers + some terse CoT; slow = quick gently fine-tuned on long CoT;
    short = slow fine-tuned on short solutions."""

    quick: Stage
    slow: Stage
    short: Stage
    n_train_per_level: int = 4000
    data_seed: int = 0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


SIZES = {
    # Every head is 32 wide: the smallest head vLLM's CPU attention takes (32, 64, 80, 96, 112, 128, ...),
    # so vLLM runs every toy checkpoint unchanged. micro: as small as that allows (tests).
    "micro": ToySize("micro", hidden_size=32, num_hidden_layers=1, intermediate_size=64,
                     num_attention_heads=1, num_key_value_heads=1),
    "s": ToySize("s", hidden_size=64, num_hidden_layers=4, intermediate_size=192,
                 num_attention_heads=2, num_key_value_heads=1),
    "m": ToySize("m", hidden_size=64, num_hidden_layers=6, intermediate_size=192,
                 num_attention_heads=2, num_key_value_heads=1),
    "l": ToySize("l", hidden_size=96, num_hidden_layers=4, intermediate_size=256,
                 num_attention_heads=3, num_key_value_heads=1),
}
DEFAULT_SIZE = "s"

_quick_mix = {"direct": 0.6, "terse": 0.4}
RECIPES = {
    # micro: long enough that its models solve some problems (Ada-R1's pairs need them), a few seconds
    "micro": Recipe(quick=Stage(_quick_mix, steps=150, lr=3e-3, batch_size=16),
                    slow=Stage({"long": 1.0}, steps=30, lr=1e-3, batch_size=16),
                    short=Stage({"short": 1.0}, steps=10, lr=1e-3, batch_size=16),
                    n_train_per_level=50),
    "s": Recipe(quick=Stage(_quick_mix, steps=1000, lr=3e-3), slow=Stage({"long": 1.0}, steps=800, lr=1e-3),
                short=Stage({"short": 1.0}, steps=200, lr=5e-4)),
    "m": Recipe(quick=Stage(_quick_mix, steps=800, lr=2.5e-3), slow=Stage({"long": 1.0}, steps=700, lr=8e-4),
                short=Stage({"short": 1.0}, steps=150, lr=5e-4)),
    "l": Recipe(quick=Stage(_quick_mix, steps=800, lr=2e-3), slow=Stage({"long": 1.0}, steps=800, lr=1e-3),
                short=Stage({"short": 1.0}, steps=150, lr=5e-4)),
}


def get_size(name: str) -> ToySize:
    if name not in SIZES:
        raise ValueError(f"unknown toy size {name!r}; choose one of {sorted(SIZES)}")
    return SIZES[name]


def get_recipe(name: str) -> Recipe:
    get_size(name)
    return RECIPES[name]


__all__ = ["ToySize", "Stage", "Recipe", "SIZES", "RECIPES", "DEFAULT_SIZE", "get_size", "get_recipe"]
