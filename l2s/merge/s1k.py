"""``l2s calibration s1k``: the s1K calibration files that AIM-TIES and Sens-Merging read.

Wu et al. (2025, §4) calibrate AIM and Sens-Merging on "100 random samples from s1K". This module
draws them and writes, into ``out_dir`` (default ``calibration/``, the directory the study configs name):

- ``s1k-short.jsonl``: rows ``{question, solution}``, the solution being s1K's short ``solution`` column
  (the source dataset's reference solution), verbatim;
- ``s1k-long.jsonl``: rows ``{question, solution}``, the solution being the long reasoning answer
  ``"\\n".join(thinking_trajectories).strip() + "\\n\\n" + attempt.strip()`` (see :func:`long_solution`);
- ``s1k.json``: the manifest: the source (hub id, split, requested revision and resolved commit; or the
  file's path and SHA-256), its row count, ``n``, ``seed``, the chosen row indices and the SHA-256 and
  row count of each file.

Rows are drawn with ``random.Random(seed).sample(range(len(source)), n)`` (Python's seeded generator,
stable across Python versions) and written in draw order, so the first ``k`` rows of a file (what
``calibration_samples=k`` reads) are themselves a random sample. Every file is written atomically with
:mod:`l2s.io` in canonical form, so the same source, ``n`` and ``seed`` give the same bytes.

Rerunning with the same arguments is a no-op when the files match the manifest (no hub access needed);
other arguments into a directory that already holds s1K files are refused unless ``overwrite``.
The source is ``simplescaling/s1K`` (train split) from the hub through :func:`datasets.load_dataset`, or
a local JSONL or parquet file with s1K's columns (``question``, ``solution``, ``thinking_trajectories``
(a list of strings), ``attempt``; others are ignored). Note that s1K's traces come from Gemini 2.0
Flash Thinking; ``simplescaling/s1K-1.1`` (R1 traces, other column names) is a different dataset.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from l2s.io import atomic_write_json, read_json, read_jsonl, write_jsonl
from l2s.provenance import file_sha256

log = logging.getLogger(__name__)

HUB_ID = "simplescaling/s1K"
SPLIT = "train"
COLUMNS = ("question", "solution", "thinking_trajectories", "attempt")
SHORT, LONG, MANIFEST = "s1k-short.jsonl", "s1k-long.jsonl", "s1k.json"
SAMPLING = "random.Random(seed).sample(range(source_rows), n), rows written in draw order"
LONG_FORMAT = "'\\n'.join(thinking_trajectories).strip() + '\\n\\n' + attempt.strip()"


def long_solution(thinking_trajectories: Sequence[str], attempt: str) -> str:
    """The long answer of an s1K row: its thinking trajectory, a blank line, then its attempt.

    The trajectory's pieces are joined by a newline, as s1's own training script joins them. No
    ``<think>`` tags are added: :func:`l2s.merge.calibration.load_texts` renders each row through the
    model's chat template, and DeepSeek-R1-Distill's template keeps only what follows ``</think>`` in an
    assistant turn, so a tagged trace would silently lose the whole trace for the System-2 tokenizer.
    Plain text reaches every template whole.
    """
    return "\n".join(thinking_trajectories).strip() + "\n\n" + attempt.strip()


def write_s1k_calibration(out_dir: str | Path = "calibration", n: int = 100, seed: int = 0,
                          source: str | Path | None = None, overwrite: bool = False,
                          revision: str | None = None) -> dict[str, Any]:
    """Write ``s1k-short.jsonl``, ``s1k-long.jsonl`` and ``s1k.json`` into ``out_dir``; return the manifest.

    ``source``: a local JSONL or parquet file in s1K's schema; ``None`` reads ``simplescaling/s1K``
    (train) from the hub at ``revision`` (default: the newest commit, whose hash is recorded).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    out_dir = Path(out_dir)
    request = _request(source, revision, n, seed)
    manifest_path = out_dir / MANIFEST
    if manifest_path.is_file():
        old = read_json(manifest_path)
        if _same_request(old, request) and _files_match(out_dir, old):
            log.info("s1K calibration in %s is up to date (%s)", out_dir, manifest_path)
            return old
        if not _same_request(old, request) and not overwrite:
            raise FileExistsError(
                f"{out_dir} holds s1K calibration files made from {_describe(old.get('source', {}))} with "
                f"n={old.get('n')}, seed={old.get('seed')}; this run asks for {_describe(request['source'])} with "
                f"n={n}, seed={seed}. Pass --overwrite to replace them, or choose another --out-dir")
    elif any((out_dir / f).exists() for f in (SHORT, LONG)) and not overwrite:
        raise FileExistsError(f"{out_dir} holds {SHORT}/{LONG} without a {MANIFEST} manifest (not written by "
                              f"'l2s calibration s1k', or interrupted); pass --overwrite to replace them")

    rows, spec = _load(source, revision)
    if len(rows) < n:
        raise ValueError(f"{_describe(spec)} has {len(rows)} rows, fewer than n={n}; pass --n {len(rows)} or fewer")
    indices = random.Random(seed).sample(range(len(rows)), n)
    short, long = [], []
    for i in indices:
        row = _checked(rows[i], f"{_describe(spec)} row {i}")
        short.append({"question": row["question"], "solution": row["solution"]})
        long.append({"question": row["question"],
                     "solution": long_solution(row["thinking_trajectories"], row["attempt"])})

    manifest_path.unlink(missing_ok=True)  # a crash below leaves files without a manifest: refused, not trusted
    files = {}
    for name, data in ((SHORT, short), (LONG, long)):
        files[name] = {"rows": len(data), "sha256": file_sha256(write_jsonl(out_dir / name, data))}
    manifest = {"source": spec, "source_rows": len(rows), "n": n, "seed": seed, "sampling": SAMPLING,
                "indices": indices, "long_solution": LONG_FORMAT, "files": files}
    atomic_write_json(manifest_path, manifest)
    log.info("s1K calibration: %d rows of %s -> %s, %s (manifest %s)", n, _describe(spec),
             out_dir / SHORT, out_dir / LONG, manifest_path)
    return read_json(manifest_path)


def _request(source, revision, n: int, seed: int) -> dict:
    """What identifies a run's inputs, to compare with a manifest without reading the hub."""
    if source is None:
        return {"source": {"hub": HUB_ID, "split": SPLIT, "revision": revision}, "n": n, "seed": seed}
    if revision is not None:
        raise ValueError("revision applies to the hub dataset only; drop --revision with --source")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"s1K source {path} not found; pass --source a JSONL or parquet file with "
                                f"s1K's columns ({', '.join(COLUMNS)}), or omit --source to read {HUB_ID}")
    return {"source": {"path": str(path), "sha256": file_sha256(path)}, "n": n, "seed": seed}


def _same_request(manifest: dict, request: dict) -> bool:
    old, new = manifest.get("source", {}), request["source"]
    same_source = (old.get("sha256") == new["sha256"] if "sha256" in new
                   else (old.get("hub"), old.get("revision")) == (new["hub"], new["revision"]))
    return same_source and manifest.get("n") == request["n"] and manifest.get("seed") == request["seed"]


def _files_match(out_dir: Path, manifest: dict) -> bool:
    files = manifest.get("files", {})
    return set(files) == {SHORT, LONG} and all(
        (out_dir / name).is_file() and file_sha256(out_dir / name) == f["sha256"] for name, f in files.items())


def _describe(spec: dict) -> str:
    if "path" in spec:
        return str(spec["path"])
    if "hub" in spec:
        revision = f", revision {spec['revision']}" if spec.get("revision") else ""
        return f"{spec['hub']} ({spec.get('split')} split{revision})"
    return "an unknown source"


def _load(source, revision) -> tuple[Sequence[dict], dict]:
    """The source's rows (a list, or a :class:`datasets.Dataset`, indexable) and its manifest entry."""
    if source is None:
        return _load_hub(revision)
    path = Path(source)
    spec = {"path": str(path), "sha256": file_sha256(path)}
    if path.suffix == ".jsonl":
        try:
            rows = read_jsonl(path)
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"s1K source {path}: unreadable as UTF-8 JSONL ({e})") from e
        for i, row in enumerate(rows):
            missing = [c for c in COLUMNS if c not in row] if isinstance(row, dict) else list(COLUMNS)
            if missing:
                raise ValueError(f"s1K source {path}, row {i}: missing field(s) {', '.join(missing)}; "
                                 f"s1K rows need {', '.join(COLUMNS)}")
        return rows, spec
    if path.suffix == ".parquet":
        import datasets

        try:
            ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
        except Exception as e:
            raise ValueError(f"s1K source {path}: unreadable as parquet ({type(e).__name__}: {e})") from e
        return _with_columns(ds, str(path)), spec
    raise ValueError(f"s1K source {path}: expected a .jsonl or .parquet file")


def _load_hub(revision: str | None) -> tuple[Sequence[dict], dict]:
    import datasets

    from l2s.cli import UserError

    commit = _hub_commit(revision)
    try:
        ds = datasets.load_dataset(HUB_ID, split=SPLIT, revision=commit or revision)
    except Exception as e:
        raise UserError(f"cannot load {HUB_ID} ({SPLIT}) from the Hugging Face hub ({type(e).__name__}: {e}); "
                        f"pass --source FILE with a local JSONL or parquet copy of its train split") from e
    spec = {"hub": HUB_ID, "split": SPLIT, "revision": revision, "commit": commit}
    return _with_columns(ds, HUB_ID), spec


def _hub_commit(revision: str | None) -> str | None:
    """The commit hash that ``revision`` (default: the newest) names on the hub, or None when offline."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(HUB_ID, revision=revision, timeout=30).sha
    except Exception as e:
        log.warning("could not resolve the commit of %s on the hub (%s); its revision is not recorded", HUB_ID, e)
        return None


def _with_columns(ds, where: str):
    missing = [c for c in COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(f"s1K source {where}: missing column(s) {', '.join(missing)} (has "
                         f"{', '.join(ds.column_names)}); s1K rows need {', '.join(COLUMNS)}")
    return ds


def _checked(row: dict, where: str) -> dict:
    for key in ("question", "solution", "attempt"):
        if not isinstance(row[key], str) or not row[key].strip():
            raise ValueError(f"{where}: field {key!r} must be a non-empty string, got {row[key]!r:.80}")
    trace = row["thinking_trajectories"]
    if not isinstance(trace, list) or not trace or not all(isinstance(t, str) for t in trace):
        raise ValueError(f"{where}: field 'thinking_trajectories' must be a non-empty list of strings, "
                         f"got {trace!r:.80}")
    return row


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibration", help="prepare calibration texts for AIM-TIES and Sens-Merging",
                       description="Prepare calibration files for the calibrated merges.")
    p.set_defaults(func=lambda args: p.print_help() or 2)
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    s = kinds.add_parser(
        "s1k", help="n random s1K rows -> s1k-short.jsonl, s1k-long.jsonl, s1k.json",
        description=f"Draw n random rows of {HUB_ID} ({SPLIT}) with a seeded RNG and write OUT_DIR/{SHORT} "
                    f"(question + short solution), OUT_DIR/{LONG} (question + thinking trajectory + attempt) "
                    f"and the manifest OUT_DIR/{MANIFEST}. Rerunning with the same arguments is a no-op. "
                    "Example: l2s calibration s1k --n 100 --seed 0 --out-dir calibration")
    s.add_argument("--n", type=int, default=100, help="rows to draw (default 100, Wu et al. 2025)")
    s.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    s.add_argument("--out-dir", dest="out_dir", default="calibration", help="output directory (default calibration)")
    s.add_argument("--source", help=f"local JSONL or parquet file in s1K's schema instead of the hub's {HUB_ID}")
    s.add_argument("--revision", help=f"hub revision of {HUB_ID} (default: the newest; its commit is recorded)")
    s.add_argument("--overwrite", action="store_true", help="replace s1K files made with other arguments")
    s.set_defaults(func=run)


def run(args) -> int:
    write_s1k_calibration(args.out_dir, n=args.n, seed=args.seed, source=args.source,
                          overwrite=args.overwrite, revision=args.revision)
    for name in (SHORT, LONG, MANIFEST):
        print(Path(args.out_dir) / name)
    return 0
