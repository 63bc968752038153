"""Atomic outputs (a stage's files appear whole at their final path, or not at all), the text
formats they are written in, and the file names of a trained run.

DVC caches whatever a stage leaves at its declared outputs, so a crash must never leave a
half-written file there. Temporary names carry the writer's process id, so leftovers of a
process that was killed (``kill -9``) are swept the next time the same output is written.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def one_line(exc: BaseException) -> str:
    """An exception message squeezed onto one line (every error deepfit prints is one line)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class NonFiniteError(ValueError):
    """An output would hold NaN or Inf; the message names the file."""


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


_UMASK = _umask()
# .<name>.tmp-<pid>-<random> (staging folders, temporary files), .<name>.old-<pid>-<random>
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_leftovers(target: Path) -> None:
    """Remove temporaries of ``target`` left by dead writers; put back an output that a killed
    swap had stepped aside (``.old-``) before the new one arrived."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for path in target.parent.iterdir():
        match = _LEFTOVER.match(path.name)
        if not match or match["name"] != target.name or pid_alive(int(match["pid"])):
            continue
        if match["kind"] == "old" and not target.exists():
            os.replace(path, target)
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; it replaces ``target`` only on success.

    On failure nothing is left: not the staging folder, nor parent folders made for it.
    """
    target = Path(target)
    made = _make_parents(target)
    sweep_leftovers(target)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir()  # mkdir (not mkdtemp) so the final folder gets the usual umask permissions
    try:
        yield staging
        _swap_in(staging, target)
        made = []
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(made)


def _make_parents(target: Path) -> list[Path]:
    """Create the missing parents of ``target``; return them, deepest first."""
    missing = [p for p in target.parents if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (another output is there) or already gone
            return


def _swap_in(staging: Path, target: Path) -> None:
    # POSIX cannot rename a folder over a non-empty one, so the old output steps aside first
    # and comes back if the second rename fails.
    if not target.exists():
        os.replace(staging, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    made = _make_parents(path)
    sweep_leftovers(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    except BaseException:
        _remove_empty(made)
        raise
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        _remove_empty(made)
        raise
    return path


def write_json(path: Path, data: Any) -> Path:
    """Atomic JSON with sorted keys; refuses NaN/Inf so no broken number reaches DVC or MLflow."""
    check_finite(data, str(path))
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def check_finite(data: Any, where: str, key: str = "") -> None:
    """Raise NonFiniteError naming the first NaN/Inf in nested dicts and lists."""
    if isinstance(data, float) and not math.isfinite(data):
        at = f" at {key}" if key else ""
        raise NonFiniteError(f"{where}: refusing to write a non-finite number{at} ({data})")
    if isinstance(data, dict):
        for name, value in data.items():
            check_finite(value, where, f"{key}.{name}" if key else str(name))
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):
            check_finite(value, where, f"{key}[{i}]")


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text with ``\\n`` line ends (DVC plot data, study tables)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_table(
    header: Sequence[str], align: Sequence[str], rows: Iterable[Sequence[Any]]
) -> str:
    """A GitHub markdown table; ``align`` holds ``"l"`` or ``"r"`` per column."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --- the files of one trained run (models/<run>/), written by train and read by evaluate --------

MODEL_FILE = "model.keras"
RUN_FILE = "run.json"
HISTORY_FILE = "history.json"
# History keys of the training rows scored after each epoch as validation is (inference mode):
# train_eval_loss, train_eval_accuracy, ... (deepfit.train.callbacks.TrainingEval).
TRAIN_EVAL = "train_eval_"
GRADIENTS_FILE = "gradients.json"


def write_gradients(path: Path, records: list[dict[str, float]]) -> None:
    """Per-epoch gradient norms as ``{"layers": [...forward order], "norms": [[...], ...]}``
    (JSON objects would lose the layer order to sorted keys)."""
    layers = list(records[0])
    write_json(path, {"layers": layers, "norms": [[r[name] for name in layers] for r in records]})


def read_gradients(path: Path) -> list[dict[str, float]]:
    """What ``write_gradients`` wrote, back as one ``{layer: norm}`` per epoch in layer order."""
    if not Path(path).exists():
        return []
    data = json.loads(Path(path).read_text())
    return [dict(zip(data["layers"], norms, strict=True)) for norms in data["norms"]]


@contextmanager
def file_lock(lock: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the file ``lock`` (made if missing) for the ``with`` block; no
    lock where the OS has no ``fcntl`` (not POSIX)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
