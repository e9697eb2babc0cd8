import contextlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("L2S_SHARED_DATA", REPO.parent / "shared" / "data"))

# One torch thread is faster than two for the tiny models of the tests on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _torch_threads():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


_torch_threads()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real benchmarks, real outputs, tokenizers): CI has it, a user's clone may not."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set L2S_SHARED_DATA); skipping real-data test")
    return SHARED_DATA


SLOW_FIXTURES = {"study", "nano_study"}  # whole studies run through papermill (minutes)


def pytest_collection_modifyitems(config, items):
    """Tests that use a whole-study fixture are ``slow``: `make test` runs them, `make test-fast` does not."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@contextlib.contextmanager
def study_in(root: Path, config: Path):
    """Run ``l2s study --config config`` with cwd = ``root`` (its runs/ and figures/), a cache in
    ``root/cache`` and one torch thread; yields the exit code, restores cwd and the environment."""
    from l2s.cli import main

    saved = {k: os.environ.get(k) for k in ("L2S_CACHE", "OMP_NUM_THREADS")}
    os.environ.update(L2S_CACHE=str(root / "cache"), OMP_NUM_THREADS="1")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        yield main(["study", "--config", str(config)])
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory) -> Path:
    """A random 2-layer Qwen2 over the toy world's byte-level BPE tokenizer, one embedding row per token
    (fast to train: DPO, SFT tests)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from l2s.toy.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    path = tmp_path_factory.mktemp("micro") / "model"
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path
