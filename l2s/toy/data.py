"""Writing and reading the toy task's splits as benchmark-style JSONL (``id, problem, answer, level``)."""

from __future__ import annotations

from pathlib import Path

from l2s import io
from l2s.toy import task


def write_splits(out: str | Path, n_per_level: dict[str, int], seed: int = 0,
                 overwrite: bool = False) -> list[Path]:
    """Write ``out/<split>.jsonl`` for every split, atomically (the whole directory or nothing)."""
    for split, n in n_per_level.items():
        if n < 0:
            raise ValueError(f"--n-{split} must be >= 0, got {n}")
    rows = task.make_splits(n_per_level, seed=seed)
    out = Path(out)
    with io.atomic_output_dir(out, overwrite=overwrite) as tmp:
        for split, split_rows in rows.items():
            io.write_jsonl(tmp / f"{split}.jsonl", split_rows)
        io.atomic_write_json(tmp / "meta.json", {"task": "shell-game", "seed": seed,
                                                 "n_per_level": n_per_level,
                                                 "rounds": task.ROUNDS, "n_cups": task.N_CUPS})
    return [out / f"{s}.jsonl" for s in rows]
