"""What every stage shares: logging set-up, signals, and turning failures into one-line errors."""

from __future__ import annotations

import argparse
import atexit
import errno
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

from deepfit.config import ConfigError
from deepfit.data import DataError
from deepfit.models import ModelFileError
from deepfit.outputs import NonFiniteError, one_line
from deepfit.tracking import TrackingError
from deepfit.tune import TuneError

# Failures a user can fix from the message alone: shown as one line, exit status 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    FloatingPointError,
    ModelFileError,
    NonFiniteError,
    TrackingError,
    TuneError,
)
# The machine's fault, not the code's (disk full, read-only, no permission): one line, exit 1.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
INTERRUPTED = (130, 143)  # exit statuses of SIGINT and SIGTERM

# The signals this stage received: once one has, any failure is reported as the interruption.
received: list[signal.Signals] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that open MLflow runs end as KILLED and temporaries go."""


def parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    return parser


@contextmanager
def stage(
    name: str, *, runs: list[str] | None = None, dataset: str | None = None, params: str = ""
) -> Iterator[logging.Logger]:
    """Configure logging and signals for a stage process; report failures in one line.

    User errors exit 2, environment errors (disk full, …) exit 1, SIGINT 130, SIGTERM 143. Inside
    a DVC experiment, a failure before any MLflow run was opened is recorded as a FAILED MLflow
    run for each of ``runs`` (or, for ``dataset``, each run declared on it).
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logger = logging.getLogger(f"deepfit.{name}")
    # TensorFlow, Keras and MLflow leave millions of long-lived objects. Frozen at exit, they
    # skip the cyclic garbage collector's final passes: 1 to 2 s of every stage process.
    atexit.register(gc.freeze)
    received.clear()
    _deferred_since.clear()
    previous = signal.signal(signal.SIGTERM, _terminate)
    # Also when started from a shell's background job, which would ignore SIGINT.
    previous_int = signal.signal(signal.SIGINT, _interrupt)
    previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable
    try:
        yield logger
    except KeyboardInterrupt as exc:
        _interrupted(name, isinstance(exc, Terminated) or received[-1:] == [signal.SIGTERM])
    except Exception as exc:
        # A library may turn the signal into an error of its own (SQLAlchemy's
        # PendingRollbackError when Ctrl-C lands in a transaction): still an interruption.
        if received:
            _interrupted(name, received[-1] == signal.SIGTERM)
        _failed(name, exc, runs, dataset, params)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        sys.unraisablehook = previous_hook
        received.clear()


def _interrupted(name: str, terminated: bool) -> NoReturn:
    print(f"deepfit {name}: interrupted ({'SIGTERM' if terminated else 'SIGINT'})", file=sys.stderr)
    sys.exit(143 if terminated else 130)


def _failed(
    name: str, exc: Exception, runs: list[str] | None, dataset: str | None, params: str
) -> NoReturn:
    """A user error in one line (exit 2), an environment error in one line (exit 1), anything
    else raised on with its traceback; recorded in MLflow first (see ``_record``)."""
    if isinstance(exc, USER_ERRORS):
        message = one_line(exc)
        _record(name, message, runs, dataset, params)
        print(f"deepfit {name}: error: {message}", file=sys.stderr)
        sys.exit(2)
    if isinstance(exc, OSError):
        _record(name, one_line(exc), runs, dataset, params)
        if exc.errno in ENVIRONMENT_ERRNOS:
            print(f"deepfit {name}: error: {one_line(exc)}", file=sys.stderr)
            sys.exit(1)
        raise exc
    _record(name, f"{type(exc).__name__}: {one_line(exc)}", runs, dataset, params)
    raise exc


def run_program(main: Callable[[], int]) -> NoReturn:
    """A stage program's entry (``python -m deepfit.stages.<stage>``): exit with ``main()``'s
    status.

    An interrupted stage ends as soon as its own clean-up has run (the MLflow run ended KILLED,
    temporaries removed, then the atexit callbacks: MLflow's flush, logging), without Python's
    finalisation. A signal that lands while TensorFlow is importing or tracing leaves its native
    state half-built, and tearing that down crashed the process (SIGSEGV, SIGABRT) after the
    "interrupted" line: 7 of 33 Ctrl-Cs sent 6-7 s after a tiny train stage started.
    """
    try:
        code = main()
    except SystemExit as exc:
        if exc.code not in INTERRUPTED:
            raise
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.code)
    raise SystemExit(code)


def deterministic_ops() -> None:
    """TensorFlow op determinism for this process: same params and seeds, same numbers.

    TensorFlow and Keras are imported here with the cyclic garbage collector paused, then frozen:
    every later full collection skips their objects instead of walking them all again (with the
    pause, about 1.5 s less per training stage)."""
    gc.disable()
    try:
        import keras  # noqa: F401
        import tensorflow as tf
    finally:
        gc.freeze()
        gc.enable()

    tf.config.experimental.enable_op_determinism()


def _terminate(signum: int, frame: FrameType | None) -> None:
    if _deferred(signum, frame):
        return
    received.append(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated("SIGTERM")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if _deferred(signum, frame):
        return
    received.append(signal.SIGINT)
    raise KeyboardInterrupt


# Code a signal's exception must not cut in two: a database call (MLflow's and Optuna's stores).
DATABASE_MODULES = (
    "sqlalchemy.",
    "sqlite3",
    "psycopg",
    "alembic.",
    "mlflow.store.",
    "optuna.storages.",
)
RETRY_SECONDS = 0.05
MAX_DEFER_SECONDS = 5.0
_deferred_since: dict[int, float] = {}


def _deferred(signum: int, frame: FrameType | None) -> bool:
    """Put off a signal that lands inside a database call: it is sent again every RETRY_SECONDS
    until it lands outside one (at most MAX_DEFER_SECONDS, then it interrupts anyway).

    An exception raised in the middle of a write can leave its transaction open, and a sqlite
    transaction holds the database's write lock: every other write, of this process or of the
    search's other workers, then waits for it and fails after 20 s ("database is locked"); on
    PostgreSQL the session is left to roll back (PendingRollbackError). Seen with Ctrl-C during
    `deepfit tune --workers 2`, and once in a train stage.
    """
    import time

    now = time.monotonic()
    since = _deferred_since.setdefault(signum, now)
    if now - since >= MAX_DEFER_SECONDS or not _inside_database(frame):
        _deferred_since.pop(signum, None)
        return False
    _send_again(signum)
    return True


def _unraisable(unraisable: Any) -> None:
    """A signal's exception raised inside a finalizer or a weakref callback, where Python cannot
    raise it and only prints "Exception ignored in ...": the signal is sent again, to interrupt
    the stage's own code. (Seen: Ctrl-C in a search worker landed in SQLAlchemy's weakref
    callback, and the worker ran on through its trials.)"""
    if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and received):
        sys.__unraisablehook__(unraisable)
        return
    signum = received.pop()
    if signum == signal.SIGTERM:
        signal.signal(signal.SIGTERM, _terminate)  # it ends the process at once after one
    _send_again(signum)


def _send_again(signum: int) -> None:
    import threading

    retry = threading.Timer(RETRY_SECONDS, os.kill, (os.getpid(), signum))
    retry.daemon = True
    retry.start()


def _inside_database(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(DATABASE_MODULES):
            return True
        frame = frame.f_back
    return False


def _record(
    stage: str, message: str, runs: list[str] | None, dataset: str | None, params: str
) -> None:
    """A failed DVC experiment stays visible in MLflow (never masks the original error)."""
    if not os.environ.get("DVC_EXP_NAME"):
        return
    from deepfit import tracking

    if tracking.opened_runs():
        return  # the run's own MLflow run already says FAILED, with the reason
    try:
        from deepfit.config import read_yaml

        raw = read_yaml(params or "params.yaml")
    except ConfigError:
        raw = {}
    names = list(runs or [])
    if dataset is not None and isinstance(raw, dict):
        declared = raw.get("runs") if isinstance(raw.get("runs"), dict) else {}
        names = [
            n for n, b in declared.items() if isinstance(b, dict) and b.get("dataset") == dataset
        ]
    for run in names:
        try:
            tracking.record_failure(run, stage, message, raw)
        except Exception as exc:  # the store may be the problem; the stage error matters more
            logging.getLogger("deepfit").warning(
                "could not record the failure in MLflow: %s", one_line(exc)
            )
