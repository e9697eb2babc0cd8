"""``l2s mix``: Ada-R1's training problems, a seeded 2,500-problem mix of GSM8K, MATH and AIME.

Luo et al. (2025, Sec. 4.1) sample K responses per problem on 2,500 problems, GSM8K : MATH : AIME =
1 : 3 : 1, a set the authors' code calls "MixMathematics" (``mix_mathematic_problems``). Neither the paper
nor the code says which splits the problems come from. This module takes them from data that no
evaluation of the study uses:

- GSM8K: the train split (``gsm8k``, split ``train``; the study evaluates on its test split);
- MATH: the train split of the 7 subjects (``math``, split ``train``) with every MATH500 problem removed
  (matched on the problem text with whitespace collapsed; MATH500 is the ``math500`` test loader);
- AIME: ``aime_1983_2023``, contests 1983-2023 only (AIME 2024 and 2025 are test sets).

See :mod:`l2s.data` for where each comes from (hub or ``data_dir/<name>/train.jsonl``). The counts
follow the ratio (500 / 1,500 / 500 for 2,500 at 1 : 3 : 1; a total that does not divide goes by
largest remainder, ties to the earlier source). Each source's problems are drawn with
``random.Random(f"{seed}:{source}").sample(pool, count)`` and the union is shuffled with
``random.Random(f"{seed}:order")``, so the first N rows (``limit`` N in ``l2s sample``) are themselves
a mix in about the same ratio.

Output, in ``<out>/mix/`` (both files appear together, written atomically):

- ``train.jsonl``: rows ``{id, problem, answer, level, subject, source}``, ``id`` = ``<source>/<source id>``;
  readable as the dataset ``mix`` (split ``train``) with ``data_dir=<out>`` by :func:`l2s.data.load_benchmark`,
  hence by ``l2s eval`` and ``l2s sample --dataset mix --data-dir <out>``;
- ``mix.json``: the recipe and what it drew from: per source its origin (hub dataset or local file and its
  SHA-256), row count, SHA-256 of its normalised rows, the count drawn; the MATH500 problems removed;
  the seed; the ids chosen; the SHA-256 of ``train.jsonl``.

Same inputs, same bytes (nothing time- or machine-dependent is recorded). A rerun that would write the
same bytes leaves the files alone; other inputs into an existing mix are refused unless ``overwrite``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from l2s import io
from l2s.data import HUB_SOURCES, HUB_TRAIN_SOURCES, load_benchmark

log = logging.getLogger(__name__)

NAME = "mix"  # the dataset name the mix is read back as
SOURCES = ("gsm8k", "math", "aime_1983_2023")  # each read with split "train"
EXCLUDE, EXCLUDE_SPLIT = "math500", "test"  # removed from the MATH pool
TRAIN_FILE, MANIFEST = "train.jsonl", "mix.json"


@dataclass
class MixConfig:
    """The mix: ``total`` problems from :data:`SOURCES` in ``ratio``, drawn with ``seed``.

    ``data_dir``: a directory of ``<name>/<split>.jsonl`` files (``gsm8k/train.jsonl``,
    ``math/train.jsonl``, ``aime_1983_2023/train.jsonl`` and ``math500/test.jsonl``); None reads the
    hub copies named in :mod:`l2s.data`.
    """

    total: int = 2500
    ratio: tuple[int, ...] = (1, 3, 1)
    seed: int = 0
    data_dir: str | None = None

    def __post_init__(self) -> None:
        self.ratio = tuple(self.ratio)
        if not isinstance(self.total, int) or self.total < 1:
            raise ValueError(f"total must be an integer >= 1, got {self.total!r}")
        if len(self.ratio) != len(SOURCES) or any(not isinstance(r, int) or r < 0 for r in self.ratio) \
                or not sum(self.ratio):
            raise ValueError(f"ratio must be {len(SOURCES)} integers >= 0 ({' : '.join(SOURCES)}), not all 0; "
                             f"got {self.ratio!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def source_counts(total: int, ratio: tuple[int, ...]) -> list[int]:
    """``total`` split in ``ratio``: floors, then the remainder one by one to the largest fractional parts."""
    exact = [total * r / sum(ratio) for r in ratio]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(ratio)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[:total - sum(counts)]:
        counts[i] += 1
    return counts


def problem_key(text: str) -> str:
    """A problem's text with all whitespace runs collapsed to one space: how MATH500 overlap is matched."""
    return " ".join(text.split())


def rows_sha256(rows: list[dict]) -> str:
    """SHA-256 of rows as canonical JSON lines (sorted keys): identifies the problems a source served."""
    h = hashlib.sha256()
    for r in rows:
        h.update((json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n").encode())
    return h.hexdigest()


def _origin(name: str, split: str, data_dir: str | None) -> dict[str, Any]:
    """Where ``name``/``split`` was read from: the local file (with its SHA-256) or the hub datasets."""
    from l2s.provenance import file_sha256

    if data_dir is not None:
        path = Path(data_dir) / name / f"{split}.jsonl"
        return {"path": str(path), "sha256": file_sha256(path) if path.is_file() else None}
    hub = (HUB_TRAIN_SOURCES if split == "train" else HUB_SOURCES)[name]
    return {"hub": [{"dataset": files or repo, "config": config, "split": s} for repo, config, s, files in hub]}


def build_mix(cfg: MixConfig) -> tuple[list[dict], dict[str, Any]]:
    """The mix's rows and its manifest (see the module docstring)."""
    excluded = load_benchmark(EXCLUDE, cfg.data_dir, split=EXCLUDE_SPLIT)
    exclude_keys = {problem_key(r["problem"]) for r in excluded}
    counts = source_counts(cfg.total, cfg.ratio)
    chosen: list[dict] = []
    sources: dict[str, Any] = {}
    removed: list[str] = []
    for name, count in zip(SOURCES, counts):
        rows = load_benchmark(name, cfg.data_dir, split="train")
        pool = rows
        if name == "math":
            pool = [r for r in rows if problem_key(r["problem"]) not in exclude_keys]
            removed = [r["id"] for r in rows if problem_key(r["problem"]) in exclude_keys]
        if len(pool) < count:
            where = _origin(name, "train", cfg.data_dir)
            raise ValueError(f"mix: source {name!r} ({where.get('path') or 'hub'}) has {len(pool)} usable problems, "
                             f"fewer than the {count} that total {cfg.total} at ratio "
                             f"{':'.join(map(str, cfg.ratio))} needs; lower --total, change --ratio, or add rows")
        drawn = random.Random(f"{cfg.seed}:{name}").sample(pool, count)
        chosen += [{"id": f"{name}/{r['id']}", "problem": r["problem"], "answer": r["answer"], "level": r["level"],
                    "subject": r["subject"], "source": name} for r in drawn]
        sources[name] = {"split": "train", "from": _origin(name, "train", cfg.data_dir), "rows": len(rows),
                         "rows_sha256": rows_sha256(rows), "usable": len(pool), "drawn": count}
    random.Random(f"{cfg.seed}:order").shuffle(chosen)
    ids = [r["id"] for r in chosen]
    if len(set(ids)) != len(ids):
        raise ValueError("mix: duplicate ids among the chosen problems (a source has duplicate ids)")
    manifest = {
        "kind": "mix", "name": "MixMathematics (Ada-R1, Luo et al. 2025, Sec. 4.1)", "dataset": NAME,
        "total": cfg.total, "ratio": dict(zip(SOURCES, cfg.ratio)), "seed": cfg.seed,
        "sampling": "per source random.Random(f'{seed}:{source}').sample(pool, count); "
                    "then random.Random(f'{seed}:order').shuffle(all)",
        "sources": sources,
        "math500_overlap": {"exclude": {"dataset": EXCLUDE, "split": EXCLUDE_SPLIT,
                                        "from": _origin(EXCLUDE, EXCLUDE_SPLIT, cfg.data_dir), "rows": len(excluded),
                                        "rows_sha256": rows_sha256(excluded)},
                            "match": "problem text, whitespace runs collapsed", "removed_ids": removed},
        "ids": ids,
    }
    return chosen, manifest


def _text(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def write_mix(out: str | Path, cfg: MixConfig, overwrite: bool = False) -> Path:
    """Write ``<out>/mix/{train.jsonl,mix.json}``; returns ``<out>/mix``. A rerun with the same result
    is a no-op; a different mix over an existing one needs ``overwrite``."""
    target = Path(out) / NAME
    rows, manifest = build_mix(cfg)
    data = _text(rows)
    manifest["files"] = {TRAIN_FILE: {"rows": len(rows), "sha256": hashlib.sha256(data.encode()).hexdigest()}}
    meta = io.dumps_json(manifest)
    if all((target / name).is_file() and (target / name).read_text(encoding="utf-8") == text
           for name, text in ((TRAIN_FILE, data), (MANIFEST, meta))):
        log.info("mix in %s is up to date", target)
        return target
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} holds another mix (or an incomplete one); pass --overwrite to replace it, "
                              "or choose another --out")
    with io.atomic_output_dir(target, overwrite=True) as tmp:
        io.atomic_write_text(tmp / TRAIN_FILE, data)
        io.atomic_write_text(tmp / MANIFEST, meta)
    log.info("mix: %s -> %s", ", ".join(f"{n} {s['drawn']}" for n, s in manifest["sources"].items()), target)
    return target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mix", help="Ada-R1's 2,500-problem training mix (GSM8K : MATH : AIME = 1 : 3 : 1)",
                       description="Draw Ada-R1's training problems: GSM8K train, MATH train without MATH500 and "
                                   "AIME 1983-2023, in a seeded ratio. Writes OUT/mix/train.jsonl (read it as "
                                   "--dataset mix --data-dir OUT --split train) and OUT/mix/mix.json.")
    p.add_argument("--out", required=True, type=Path, help="directory to write mix/ into")
    p.add_argument("--total", type=int, default=2500, help="problems in the mix (default 2500)")
    p.add_argument("--ratio", default="1:3:1", help="GSM8K:MATH:AIME (default 1:3:1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="directory of <name>/train.jsonl and math500/test.jsonl (default: the hub)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, different mix")
    p.set_defaults(func=run_mix)


def parse_ratio(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--ratio must be integers joined by ':' (GSM8K:MATH:AIME, e.g. 1:3:1), "
                         f"got {text!r}") from None


def run_mix(args) -> int:
    cfg = MixConfig(total=args.total, ratio=parse_ratio(args.ratio), seed=args.seed, data_dir=args.data_dir)
    print(write_mix(args.out, cfg, overwrite=args.overwrite))
    return 0
