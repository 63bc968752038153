"""What every stage shares: logging set-up and turning known failures into one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from deepfit.config import ConfigError
from deepfit.data import DataError
from deepfit.tracking import TrackingError

# Failures a user can fix from the message alone: shown as one line, exit status 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    FloatingPointError,
    TrackingError,
)


def parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    return parser


@contextmanager
def stage(name: str) -> Iterator[logging.Logger]:
    """Configure logging for a stage process; report user errors in one line and exit 2."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logger = logging.getLogger(f"deepfit.{name}")
    try:
        yield logger
    except USER_ERRORS as exc:
        print(f"deepfit {name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"deepfit {name}: interrupted", file=sys.stderr)
        sys.exit(130)
