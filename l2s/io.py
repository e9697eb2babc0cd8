"""Files that appear whole or not at all, and JSONL that survives being killed.

Every output of l2s goes through these helpers: a reader never sees a half-written file or
directory, and an interrupted run leaves only complete rows behind.

Temporary siblings are named ``.<name>.<host>.<pid>.<random>.tmp`` (a directory being replaced is
parked as ``.<name>.<host>.<pid>.old``): an error or SIGTERM removes them on the way out (the CLI turns
SIGTERM into an exception, :mod:`l2s.cli`), and those of a process of this host that is gone (SIGKILL,
a power cut) are swept by the next write into the same parent (:func:`sweep_stale`); the host in the
name keeps a shared disk's temporaries of other machines' live processes safe. Files and directories are
created with ``0o666`` / ``0o777`` less the umask, as a plain ``open()`` or ``mkdir`` would.

A directory written by :func:`atomic_output_dir` holds the marker :data:`MARKER`; ``overwrite`` replaces
only a directory that l2s wrote (:func:`written_by_l2s`), never a user's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

MARKER = ".l2s-output.json"  # in every directory atomic_output_dir writes: l2s may replace it
# What l2s wrote before it left MARKER: run records (eval, score, pairs), model cards and manifests.
LEGACY_RECORDS = ("provenance.json", "mix.json", "s1k.json", "study_step.json")
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
PARKED_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.old$")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine; a process of another user counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(parent: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporary siblings in ``parent`` (only those of ``name``, if given) whose process, on
    this host, is gone; a parked ``.<name>.<host>.<pid>.old`` whose ``<name>`` is missing (killed
    mid-replace) is moved back. Returns what was removed or restored."""
    parent = Path(parent)
    swept = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return swept
    for entry in entries:
        m = TEMP_NAME.match(entry.name) or PARKED_NAME.match(entry.name)
        if not m or (name is not None and m["name"] != name) or m["host"] != HOST or pid_alive(int(m["pid"])):
            continue
        path = Path(entry.path)
        target = parent / m["name"]
        with contextlib.suppress(OSError):
            if m.re is PARKED_NAME and not target.exists():
                os.replace(path, target)
            elif entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            swept.append(path)
    return swept


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent, path.name)
    tmp = _tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, 2-space indent, trailing newline): same data, same bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, dumps_json(obj))


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file; an undecodable byte is an error naming the file, line and column."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); "
                         "save the file as UTF-8") from None


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: corrupt JSON ({e}); delete it or restore it from the run's "
                         "source") from e


def written_by_l2s(path: str | os.PathLike) -> bool:
    """Whether directory ``path`` is one l2s wrote: it holds :data:`MARKER`, or (written before the
    marker existed) an l2s record (``l2s_*.json``, :data:`LEGACY_RECORDS`, a toy split's ``meta.json``),
    itself or in every one of its subdirectories (a toy family, a stand-in pair)."""
    path = Path(path)

    def own(d: Path) -> bool:
        if (d / MARKER).is_file() or any((d / r).is_file() for r in LEGACY_RECORDS) or any(d.glob("l2s_*.json")):
            return True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            return read_json(d / "meta.json").get("task") == "shell-game"
        return False

    if not path.is_dir() or path.is_symlink():
        return False
    if own(path):
        return True
    subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return bool(subdirs) and all(own(d) for d in subdirs)


def check_replaceable(target: str | os.PathLike, overwrite: bool) -> None:
    """Refuse an existing ``target`` unless ``overwrite`` is set and l2s wrote it (:func:`written_by_l2s`)."""
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
    if not written_by_l2s(target):
        raise FileExistsError(f"{target} exists and was not written by l2s (no {MARKER} or l2s record in it): "
                              "--overwrite replaces only l2s outputs; move it away or choose another output path")


@contextlib.contextmanager
def atomic_output_dir(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; on success rename it to ``target``.

    On any error (SIGTERM included, see :mod:`l2s.cli`) the temporary directory is removed and
    ``target`` is left as it was. An existing ``target`` is an error unless ``overwrite`` is set and
    l2s wrote it (:func:`check_replaceable`); it is replaced only after success. Stale temporary
    siblings of dead processes in the same parent are swept first (:func:`sweep_stale`).
    """
    target = Path(target)
    check_replaceable(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent)
    tmp = _tmp_name(target)
    os.mkdir(tmp, 0o777)
    try:
        yield tmp
        atomic_write_json(tmp / MARKER, {"written_by": "l2s"})
        if target.exists():
            old = target.with_name(f".{target.name}.{HOST}.{os.getpid()}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def append_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Append complete lines and fsync: a killed process loses at most the row being written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    return n


def read_jsonl_lines(path: str | os.PathLike, *, tolerate_torn_tail: bool = False) -> list[tuple[int, dict]]:
    """``(line number, row)`` of a JSONL file of objects. A torn last line (a killed writer) is dropped
    when ``tolerate_torn_tail``; any other unparsable line, a line that is not a JSON object, or a
    byte that is not UTF-8 is an error naming the file and line. Blank lines are skipped."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; expected a JSONL file")
    rows: list[tuple[int, dict]] = []
    lines = read_text(path).splitlines(keepends=True)
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if tolerate_torn_tail and i == len(lines) and not line.endswith("\n"):
                break
            raise ValueError(f"{path}:{i}: corrupt JSON line ({e})") from e
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i}: expected a JSON object per line, got {type(row).__name__} "
                             f"{line.strip()[:60]!r}")
        rows.append((i, row))
    return rows


def read_jsonl(path: str | os.PathLike, *, tolerate_torn_tail: bool = False) -> list[dict]:
    """The rows of :func:`read_jsonl_lines`, without their line numbers."""
    return [row for _, row in read_jsonl_lines(path, tolerate_torn_tail=tolerate_torn_tail)]


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write a whole JSONL file atomically (sorted keys: same rows, same bytes)."""
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    return atomic_write_text(path, text)
