"""Benchmark test sets, and the training problems of Ada-R1, as uniform rows ``{id, problem, answer, level, subject}``.

Loads the math benchmarks of Wu et al. (2025) and Luo et al. (2025) from a local directory of
``<name>/test.jsonl`` files (the Qwen2.5-Math toolkit's files, byte for byte) or from the copies the
community uses on the hub, and the toy world's splits. Gold answers are taken as the Qwen2.5-Math
toolkit takes them (``parse_ground_truth``): GSM8K after ``####``, MATH / MATH500 / Minerva from the
solution's last ``\\boxed{}`` (or the ``answer`` field where the file has one), OlympiadBench
``final_answer[0]`` without ``$``, college_math ``answer`` without ``$``, AIME ``answer``.

Training problems (``split="train"``), for Ada-R1's 2,500-problem mix (Luo et al. 2025, Sec. 4.1;
built by :mod:`l2s.mix`), in the same row formats and with the same gold-answer rules:

- ``gsm8k`` train: ``openai/gsm8k`` (``main``, train; 7,473 rows ``{question, answer}``), ids are the
  row index;
- ``math`` train: ``EleutherAI/hendrycks_math``, the 7 subjects' train splits (7,500 rows ``{problem,
  level, type, solution}``); the hub rows have no ``unique_id``, so the id is
  ``train/<subject config>/<row index in that config>`` (not MATH's own file number);
- ``aime_1983_2023`` (train only): past AIME problems from ``di-zhang-fdu/AIME_1983_2024`` (train;
  columns ``ID`` such as ``1983-1`` or ``2000-I-1``, ``Year``, ``Problem Number``, ``Question``,
  ``Answer``, ``Part``; AoPS wiki problems 1983-2023 plus AIME 2024 II). Rows after 2023 are dropped on
  loading, from the hub and from local files alike: AIME 2024 and 2025 are test sets (``aime24``,
  ``aime25``). Local files may also spell the columns ``id``/``year``/``problem``/``answer``;
- ``mix``: the file ``l2s mix`` writes (``<data_dir>/mix/train.jsonl``, rows ``{id, problem, answer,
  level, subject, source}``); it has no hub copy.

Local files are ``<data_dir>/<name>/train.jsonl`` in the hub datasets' formats (for ``math``, with
``subject`` or ``type`` and an optional ``unique_id`` or ``answer``, as the test files).
"""

from __future__ import annotations

import re
from pathlib import Path

from l2s import io

DATASETS = ("gsm8k", "math500", "minerva_math", "olympiadbench", "college_math", "aime24", "aime25",
            "math", "toy", "aime_1983_2023", "mix")

# The Qwen2.5-Math toolkit's data files, pinned to the commit the shared benchmarks were copied from.
_QWEN_RAW = ("https://raw.githubusercontent.com/QwenLM/Qwen2.5-Math/"
             "a45202bd16f1ec06f433442dc1152d0074773465/evaluation/data/{name}/test.jsonl")
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                 "number_theory", "prealgebra", "precalculus")

# (dataset id or "json", config, split, data_files) per benchmark: what the community loads.
HUB_SOURCES: dict[str, list[tuple[str, str | None, str, str | None]]] = {
    "gsm8k": [("openai/gsm8k", "main", "test", None)],
    "math500": [("HuggingFaceH4/MATH-500", None, "test", None)],
    "minerva_math": [("json", None, "train", _QWEN_RAW.format(name="minerva_math"))],
    "olympiadbench": [("json", None, "train", _QWEN_RAW.format(name="olympiadbench"))],
    "college_math": [("json", None, "train", _QWEN_RAW.format(name="college_math"))],
    "aime24": [("json", None, "train", _QWEN_RAW.format(name="aime24"))],
    "aime25": [("math-ai/aime25", None, "test", None)],
    "math": [("EleutherAI/hendrycks_math", s, "test", None) for s in MATH_SUBJECTS],
}

# Training problems on the hub (same tuple layout), by dataset name.
HUB_TRAIN_SOURCES: dict[str, list[tuple[str, str | None, str, str | None]]] = {
    "gsm8k": [("openai/gsm8k", "main", "train", None)],
    "math": [("EleutherAI/hendrycks_math", s, "train", None) for s in MATH_SUBJECTS],
    "aime_1983_2023": [("di-zhang-fdu/AIME_1983_2024", None, "train", None)],
}
AIME_LAST_TRAIN_YEAR = 2023  # AIME 2024 / 2025 are test sets: never train on them

TOY_DEFAULT_N = 100  # problems per level when the toy split is generated rather than read


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces), or ``\\boxed x``.

    Written by hand: math-verify extracts boxed answers only as parsed sympy objects, and the
    gold answers and saved ``pred`` strings need the raw text.
    """
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\b", text)]
    for m in reversed(starts):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "\\":
                    j += 2  # an escaped \{ or \} is content, not a brace of the box
                    continue
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1:j]
                j += 1
            continue  # unbalanced (e.g. cut off mid-answer): try an earlier box
        if m.group(0) == "\\boxed" and i > m.end():
            word = re.match(r"[^\s$]+", text[i:])
            if word:
                return word.group(0)
    return None


def strip_dollars(s: str) -> str:
    """Drop inline-math delimiters (``$4 \\frac{4}{9}$ days`` -> ``4 \\frac{4}{9} days``); ``\\$`` stays."""
    return re.sub(r"(?<!\\)\$", "", s).strip()


def _need(row: dict, field: str, where: str):
    if field not in row:
        raise ValueError(f"{where}: missing field {field!r} (row has {sorted(row)})")
    if row[field] is None:
        raise ValueError(f"{where}: field {field!r} is null; give it a value (or drop the row)")
    return row[field]


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def _string(row: dict, field: str, where: str) -> str:
    """A required non-empty text field (a problem, a solution)."""
    value = _need(row, field, where)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {field!r} must be a non-empty string, got {_kind(value)} {value!r:.60}")
    return value


def _answer(value, field: str, where: str) -> str:
    """A gold answer as text: a string or a number (AIME's integers); null, booleans, lists are errors."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
        raise ValueError(f"{where}: field {field!r} must be a non-empty string or a number, got "
                         f"{_kind(value)} {value!r:.60}")
    return str(value).strip()


def _id(value, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: the problem id must be a string or an integer, got {_kind(value)} {value!r:.60}")
    return str(value)


def _first(row: dict, fields: tuple[str, ...], where: str):
    """The first of ``fields`` that ``row`` has (hub and local spellings of one column)."""
    for field in fields:
        if row.get(field) is not None:
            return row[field]
    raise ValueError(f"{where}: missing field {' or '.join(map(repr, fields))} (row has {sorted(row)})")


def aime_year(row: dict, where: str) -> int:
    """The contest year of an AIME row (``Year`` or ``year``), to keep 1983-2023 only."""
    year = _first(row, ("Year", "year"), where)
    try:
        return int(year)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: field 'Year' must be a year, got {year!r}") from None


def _kept(name: str, row: dict, where: str) -> bool:
    """False for the rows a dataset leaves out: AIME problems after 2023 (test sets, not training data)."""
    return name != "aime_1983_2023" or aime_year(row, where) <= AIME_LAST_TRAIN_YEAR


def _level(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    m = re.search(r"\d+", str(value))
    return int(m.group(0)) if m else None  # MATH has a few "Level ?" rows


def normalize_row(name: str, row: dict, index: int, where: str) -> dict:
    """One benchmark row as ``{id, problem, answer, level, subject}``; ``where`` names it in errors
    (a file and line). Text fields must be strings, gold answers strings or numbers, ids strings or
    integers: a null answer is an error, never graded against "None"."""
    where = f"{where} (row {index})"
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {_kind(row)}")
    if name == "gsm8k":
        problem = _string(row, "question", where)
        answer = _string(row, "answer", where)
        if "####" not in answer:
            raise ValueError(f"{where}: field 'answer' has no '####' gold answer")
        gold = re.sub(r"(\d),(?=\d{3}\b)", r"\1", answer.split("####")[-1].strip())
        return {"id": _id(row.get("idx", index), where), "problem": problem, "answer": _answer(gold, "answer", where),
                "level": None, "subject": None}
    if name in ("math500", "math"):
        problem = _string(row, "problem", where)
        gold = row.get("answer")
        if gold is None:
            gold = last_boxed(_string(row, "solution", where))
            if gold is None:
                raise ValueError(f"{where}: field 'solution' has no \\boxed{{}} gold answer")
        return {"id": _id(row.get("unique_id", index), where), "problem": problem,
                "answer": _answer(gold, "answer", where), "level": _level(row.get("level")),
                "subject": row.get("subject", row.get("type"))}
    if name == "minerva_math":
        problem = _string(row, "problem", where)
        gold = last_boxed(_string(row, "solution", where))
        if gold is None:
            raise ValueError(f"{where}: field 'solution' has no \\boxed{{}} gold answer")
        return {"id": _id(row.get("idx", index), where), "problem": problem,
                "answer": _answer(strip_dollars(gold), "solution", where), "level": None, "subject": row.get("type")}
    if name == "olympiadbench":
        problem = _string(row, "question", where)
        final = _need(row, "final_answer", where)
        if not isinstance(final, list) or not final:
            raise ValueError(f"{where}: field 'final_answer' must be a non-empty list, got {final!r}")
        if row.get("context"):
            problem = f"{row['context']}\n{problem}"
        return {"id": _id(row.get("id", index), where), "problem": problem,
                "answer": strip_dollars(_answer(final[0], "final_answer", where)), "level": None,
                "subject": row.get("subfield")}
    if name == "college_math":
        problem = _string(row, "question", where)
        gold = strip_dollars(_answer(_need(row, "answer", where), "answer", where))
        rid = f"{row['data_source']}/{row['question_number']}" if "question_number" in row else str(index)
        return {"id": rid, "problem": problem, "answer": gold, "level": None,
                "subject": row.get("data_topic")}
    if name in ("aime24", "aime25"):
        field = "problem" if row.get("problem") is not None else "question"
        if row.get(field) is None:
            raise ValueError(f"{where}: missing field 'problem' (row has {sorted(row)})")
        return {"id": _id(row.get("id", index), where), "problem": _string(row, field, where),
                "answer": _answer(_need(row, "answer", where), "answer", where), "level": None, "subject": None}
    if name == "toy":
        return {"id": _id(_need(row, "id", where), where), "problem": _string(row, "problem", where),
                "answer": _answer(_need(row, "answer", where), "answer", where),
                "level": _level(_need(row, "level", where)), "subject": None}
    if name == "aime_1983_2023":
        rid = row.get("ID", row.get("id"))
        problem = _first(row, ("Question", "problem"), where)
        if not isinstance(problem, str) or not problem.strip():
            raise ValueError(f"{where}: field 'Question' must be a non-empty string, got {_kind(problem)}")
        return {"id": str(index) if rid is None else _id(rid, where), "problem": problem,
                "answer": _answer(_first(row, ("Answer", "answer"), where), "Answer", where), "level": None,
                "subject": None}
    if name == "mix":
        return {"id": _id(_need(row, "id", where), where), "problem": _string(row, "problem", where),
                "answer": _answer(_need(row, "answer", where), "answer", where), "level": _level(row.get("level")),
                "subject": row.get("subject")}
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def _from_file(name: str, path: Path) -> list[dict]:
    if not path.is_file():
        hint = "; build it with `l2s mix --out DIR` and pass that DIR as data_dir" if name == "mix" else ""
        raise FileNotFoundError(f"dataset {name!r}: {path} not found{hint}")
    rows = io.read_jsonl_lines(path)
    return [normalize_row(name, r, i, f"{path}:{line}") for i, (line, r) in enumerate(rows)
            if _kept(name, r, f"{path}:{line} (row {i})")]


def _hub_dataset(name: str, l2s_split: str, repo: str, config: str | None, split: str, files: str | None):
    """One hub source of ``name``; any failure to fetch it (offline, a missing package, a moved file)
    is an error that says how to read local files instead."""
    import datasets

    try:
        if repo == "json":
            return datasets.load_dataset("json", data_files=files, split=split)
        return datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # noqa: BLE001  (whatever went wrong, the remedy is a local copy)
        first = str(e).splitlines()[0] if str(e) else ""
        raise FileNotFoundError(f"dataset {name!r}: cannot load {files or repo} from the Hugging Face hub "
                                f"({type(e).__name__}: {first}); pass --data-dir DIR holding "
                                f"{name}/{l2s_split}.jsonl (e.g. the Qwen2.5-Math toolkit's data files)") from e


def _from_hub(name: str) -> list[dict]:
    rows: list[dict] = []
    for repo, config, split, files in HUB_SOURCES[name]:
        ds = _hub_dataset(name, "test", repo, config, split, files)
        where = f"{files or repo}[{config or ''}:{split}]"
        rows += [normalize_row(name, r, len(rows) + i, where) for i, r in enumerate(ds)]
    return rows


def _train_from_hub(name: str) -> list[dict]:
    """The training problems of ``name`` from :data:`HUB_TRAIN_SOURCES` (MATH rows get ids, AIME after 2023 dropped)."""
    rows: list[dict] = []
    for repo, config, split, _ in HUB_TRAIN_SOURCES[name]:
        ds = _hub_dataset(name, "train", repo, config, split, None)
        where = f"{repo}[{config or ''}:{split}]"
        for i, r in enumerate(ds):
            if name == "math":
                r = {**r, "unique_id": f"train/{config}/{i}"}
            if _kept(name, r, f"{where} (row {i})"):
                rows.append(normalize_row(name, r, len(rows), where))
    return rows


def load_benchmark(name: str, data_dir: str | Path | None = None, split: str = "test",
                   limit: int | None = None, toy_seed: int = 0) -> list[dict]:
    """Rows ``{id, problem, answer, level, subject}`` of benchmark ``name``.

    ``data_dir`` holds ``<name>/<split>.jsonl``; without it the hub copy is downloaded (the test split,
    or the train split of ``gsm8k``, ``math`` and ``aime_1983_2023``) — except for ``toy``, whose split is
    generated by :func:`l2s.toy.task.make_splits` (``TOY_DEFAULT_N`` per level), and ``mix``, which
    exists only as the local file ``l2s mix`` writes.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if data_dir is not None:
        rows = _from_file(name, Path(data_dir) / name / f"{split}.jsonl")
    elif name == "toy":
        from l2s.toy import task

        generated = task.make_splits({split: TOY_DEFAULT_N}, seed=toy_seed)[split]
        rows = [normalize_row("toy", r, i, f"toy:{split}") for i, r in enumerate(generated)]
    elif split == "train" and name in HUB_TRAIN_SOURCES:
        rows = _train_from_hub(name)
    elif name == "mix":
        raise ValueError("dataset 'mix' has no hub copy: build it with `l2s mix --out DIR` and pass that DIR as "
                         "data_dir (it reads DIR/mix/train.jsonl)")
    else:
        if split != "test" or name not in HUB_SOURCES:
            on_hub = [s for s, src in (("test", HUB_SOURCES), ("train", HUB_TRAIN_SOURCES)) if name in src]
            raise ValueError(f"dataset {name!r}: the hub serves split(s) {on_hub} only, got {split!r}; "
                             f"pass data_dir with {name}/{split}.jsonl")
        rows = _from_hub(name)
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"dataset {name!r}: duplicate ids")
    return rows[:limit] if limit is not None else rows
