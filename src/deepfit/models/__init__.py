"""Model registry: one module per architecture, discovered at import time without importing Keras.

Each architecture module defines ``SPEC = ModelSpec(...)`` holding its typed config class and a
builder. Keras is imported only inside builders, so validating params.yaml stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

from deepfit.models.base import ModelFileError, ModelSpec

if TYPE_CHECKING:
    import keras

# Shared pieces, and the modules that define a Keras class at import (GAN, encoder-decoder).
_NON_MODELS = {"base", "blocks", "gan_network", "seq2seq_network"}


def _discover() -> dict[str, ModelSpec]:
    found: dict[str, ModelSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name in _NON_MODELS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, ModelSpec):
            found[spec.name] = spec
    return found


REGISTRY: dict[str, ModelSpec] = _discover()


def get_spec(name: str) -> ModelSpec:
    """Return the spec of a registered model, or fail naming the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        valid = ", ".join(sorted(REGISTRY))
        raise KeyError(f"unknown model {name!r}; valid models: {valid}") from None


def load_model(path: Path, name: str) -> keras.Model:
    """Load a saved ``.keras`` model of architecture ``name`` in safe mode: a file that holds
    Python code (a ``Lambda`` layer) is refused, and other formats (HDF5, pickles) are not read.
    """
    import zipfile

    import keras

    path = Path(path)
    if path.suffix != ".keras":
        raise ModelFileError(f"{path}: only .keras model files are loaded")
    if not path.is_file():
        raise ModelFileError(f"{path}: not found; rerun the train stage that writes it")
    factory = get_spec(name).extra.get("custom_objects")
    custom = factory() if factory else None
    try:
        return keras.saving.load_model(path, custom_objects=custom, safe_mode=True)
    except ValueError as exc:
        if "safe_mode" not in str(exc):
            raise
        raise ModelFileError(
            f"{path}: refused: it holds Python code (a Lambda layer or a pickled function), "
            "which deepfit never loads"
        ) from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(f"{path}: not a readable .keras file ({exc})") from None


__all__ = ["REGISTRY", "ModelFileError", "ModelSpec", "get_spec", "load_model"]
