"""Prepared-data files: byte-stable npz, sha256 manifest, atomic directory swap, verified load.

Text (one string per sample, an array of ``str``) is stored in the npz without pickles, as two
plain arrays: ``<key>_utf8``, every text's UTF-8 bytes end to end (uint8), and
``<key>_offsets``, where text i is ``utf8[offsets[i]:offsets[i + 1]]`` (int64, n + 1 values).
Loading turns them back into one array of ``str`` (``<key>``). A text dataset's vocabulary is a
JSON list of words beside the splits (``vocabulary.json``), checked by its sha256 like them.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepfit.data.config import DataSpec
from deepfit.data.errors import DataError

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
VOCABULARY = "vocabulary.json"
UTF8, OFFSETS = "_utf8", "_offsets"  # suffixes of the two arrays that store one text array
MANIFEST_FORMAT = 1
# np.savez stamps each member with the current time; a fixed stamp keeps files byte-identical.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Prepared:
    """A verified prepared dataset: (x, y) per split, extra arrays per split, manifest, spec."""

    train: Arrays
    val: Arrays
    test: Arrays
    extras: dict[str, dict[str, np.ndarray]]
    manifest: dict[str, Any]
    spec: DataSpec


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an uncompressed .npz that np.load reads and that is identical for identical arrays."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            # force_zip64 as np.savez does: the size is unknown until the array is written.
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(arrays[key]), allow_pickle=False)


def is_text(array: np.ndarray) -> bool:
    """Whether ``array`` holds one string per item (stored as UTF-8 bytes and offsets)."""
    return array.dtype == object or array.dtype.kind == "U"


def pack_texts(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` with each text array replaced by its ``_utf8`` and ``_offsets`` arrays."""
    packed = {}
    for key, array in arrays.items():
        if not is_text(array):
            packed[key] = array
            continue
        encoded = [str(text).encode("utf-8") for text in array]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        packed[key + UTF8] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        packed[key + OFFSETS] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return packed


def unpack_texts(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` with each ``_utf8``/``_offsets`` pair turned back into an array of ``str``."""
    out = {}
    for key, array in arrays.items():
        if key.endswith(OFFSETS) and key[: -len(OFFSETS)] + UTF8 in arrays:
            continue
        if key.endswith(UTF8) and key[: -len(UTF8)] + OFFSETS in arrays:
            name = key[: -len(UTF8)]
            data, ends = array.tobytes(), arrays[name + OFFSETS]
            texts = [data[ends[i] : ends[i + 1]].decode("utf-8") for i in range(len(ends) - 1)]
            out[name] = np.array(texts, dtype=object)
        else:
            out[key] = array
    return out


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write one array as a plain .npy, which ``np.load(path, mmap_mode="r")`` memory-maps."""
    with open(path, "wb") as handle:
        np.lib.format.write_array(handle, np.asarray(array), allow_pickle=False)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def array_info(array: np.ndarray) -> dict[str, Any]:
    """Shape and dtype of an array, as the manifest records them (texts: dtype ``str``)."""
    if is_text(array):
        return {"shape": list(array.shape), "dtype": "str", "stored_as": "utf8 bytes + offsets"}
    return {"shape": list(array.shape), "dtype": str(array.dtype)}


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a prepared dataset, or a DataError naming the file."""
    path = directory / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: not found; run the prepare stage for this dataset")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); rerun the prepare stage") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path}: unknown manifest format; rerun the prepare stage")
    return manifest


def load_prepared(directory: Path) -> Prepared:
    """Load data/prepared/<dataset>/, checking every file's sha256 against the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    try:
        arrays = {split: _load_split(directory, manifest["splits"][split]) for split in SPLITS}
        spec = DataSpec(
            input_shape=tuple(int(d) for d in manifest["input_shape"]),
            kind=manifest["kind"],
            task=manifest["task"],
            n_outputs=int(manifest["n_outputs"]),
            input_scale=input_scale(manifest),
            input_vocab=_input_vocab(manifest),
            target_length=(manifest.get("details") or {}).get("target_length"),
            vocabulary=_vocabulary(directory, manifest),
            sequence_length=(manifest.get("details") or {}).get("sequence_length"),
        )
    except (KeyError, TypeError) as exc:
        raise DataError(
            f"{directory / MANIFEST}: malformed manifest (missing {exc}); rerun the prepare stage"
        ) from exc
    pairs = {split: (data.pop("x"), data.pop("y")) for split, data in arrays.items()}
    return Prepared(
        train=pairs["train"],
        val=pairs["val"],
        test=pairs["test"],
        extras=arrays,
        manifest=manifest,
        spec=spec,
    )


def input_scale(manifest: Mapping[str, Any]) -> float | None:
    """The factor the model applies to stored inputs (raw uint8 pixels), or None."""
    scale = manifest.get("feature_scale") or {}
    return float(scale["scale"]) if scale.get("method") == "rescale_in_model" else None


def _input_vocab(manifest: Mapping[str, Any]) -> int | None:
    """Size of the source vocabulary of a translation dataset, or None."""
    source = (manifest.get("details") or {}).get("source_vocab")
    return len(source) if source is not None else None


def _vocabulary(directory: Path, manifest: Mapping[str, Any]) -> tuple[str, ...] | None:
    """A text dataset's words, checked against the manifest's sha256; None for other data."""
    entry = manifest.get("vocabulary")
    if entry is None:
        return None
    path = _verified(directory, entry)
    return tuple(json.loads(path.read_text(encoding="utf-8")))


def check_batch_size(data: Prepared, batch_size: int, key: str) -> None:
    """DataError naming ``key`` when one batch would hold more than the whole training split."""
    samples = len(data.train[0])
    if batch_size > samples:
        name = data.manifest.get("dataset", "the dataset")
        raise DataError(
            f"{key}: {batch_size} is larger than the {samples} training samples of {name}; "
            f"use at most {samples}"
        )


def _load_split(directory: Path, info: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if info.get("format") == "npy":
        data = {key: _load_npy(directory, entry, key) for key, entry in info["files"].items()}
        where = directory
    else:
        path = _verified(directory, info)
        with np.load(path, allow_pickle=False) as archive:
            data = unpack_texts({key: archive[key] for key in archive.files})
        where = path
    for key in ("x", "y"):
        if key not in data:
            raise DataError(f"{where}: no array {key!r}; rerun the prepare stage")
    return data


def _load_npy(directory: Path, entry: Mapping[str, Any], key: str) -> np.ndarray:
    # Inputs stay on disk (memory-mapped); training streams batches from them.
    path = _verified(directory, entry)
    return np.load(path, mmap_mode="r" if key == "x" else None, allow_pickle=False)


def _verified(directory: Path, entry: Mapping[str, Any]) -> Path:
    """The file of a manifest entry, after checking it exists and matches its sha256."""
    path = directory / entry["file"]
    if not path.is_file():
        raise DataError(f"{path}: missing (listed in {MANIFEST}); rerun the prepare stage")
    if sha256_file(path) != entry["sha256"]:
        raise DataError(
            f"{path}: sha256 does not match {MANIFEST} (stale or corrupted data); "
            "rerun the prepare stage"
        )
    return path
