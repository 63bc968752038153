"""source: images — class sub-folders of PNG/JPEG/BMP/GIF files under data/raw/, decoded with
Pillow in parallel, converted to one color mode, resized, and kept as raw uint8 pixels.

Splitting happens on the file list (labels are the folder names), before any pixel is decoded,
so every image is decoded once, straight into its split. Scaling to [0, 1] is not done here: the
model's first layer does it, so the saved model takes the same pixels as the user's files.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfit.data import sources
from deepfit.data.config import ImagesConfig
from deepfit.data.errors import DataError
from deepfit.data.prepare import Built, holdout, split_indices
from deepfit.outputs import one_line

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
PILLOW_MODES = {"grayscale": "L", "rgb": "RGB"}
# Stored pixels are 0..255; the model's Rescaling layer multiplies by this.
PIXEL_SCALE = 1.0 / 255.0
# Images per task. The first chunk is decoded in this process and timed: a worker pool starts
# only when the rest would take longer than POOL_AFTER_SECONDS, since for small PNGs one process
# (about 10,000 images/s) beats a pool on 2 busy cores.
CHUNK = 256
POOL_AFTER_SECONDS = 0.5


@dataclass(frozen=True)
class Listing:
    """Image files and their class codes, with the files skipped because they are no images."""

    files: list[Path]
    labels: np.ndarray
    skipped: list[Path]


def build_images(cfg: ImagesConfig, seed: int, raw_dir: Path, where: str) -> Built:
    """Split a class-folder tree (stratified, or its own train/ and test/), decode into uint8."""
    root = sources.resolve_raw_dir(cfg.path, raw_dir, f"{where}.path")
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    parts = {"train": root / "train", "test": root / "test"} if presplit else {"all": root}
    classes = class_names(parts, where)
    listings = {part: list_images(folder, classes, raw_dir) for part, folder in parts.items()}
    files = split_files(listings, cfg, seed, where)
    # One decode over all splits (one worker pool); each split is then a slice of the result.
    paths = [path for split_paths, _ in files.values() for path in split_paths]
    pixels, modes = decode_images(paths, cfg.image_size, cfg.color_mode)
    bounds = np.cumsum([0, *(len(split_paths) for split_paths, _ in files.values())])
    splits = {
        split: {"x": pixels[bounds[i] : bounds[i + 1]], "y": labels}
        for i, (split, (_, labels)) in enumerate(files.items())
    }
    skipped = [str(p.relative_to(root)) for listing in listings.values() for p in listing.skipped]
    if skipped:
        log.warning("%s: skipped %d files that are not images: %s", root, len(skipped), skipped[:5])
    target = PILLOW_MODES[cfg.color_mode]
    details = {
        "layout": "train_test_folders" if presplit else "class_folders",
        "image_modes": dict(sorted(modes.items())),
        "converted": {mode: n for mode, n in sorted(modes.items()) if mode != target},
        "skipped_files": {"count": len(skipped), "first": skipped[:20]},
    }
    scale = {"method": "rescale_in_model", "scale": PIXEL_SCALE}
    return Built(splits, classes, feature_scale=scale, storage="npy", details=details)


def class_names(parts: dict[str, Path], where: str) -> list[str]:
    """Sorted class folder names; every part (train/ and test/) must have the same ones."""
    found = {part: sorted(_class_folders(folder)) for part, folder in parts.items()}
    first, names = next(iter(found.items()))
    for part, other in found.items():
        if other != names:
            only = sorted(set(names) ^ set(other))
            raise DataError(
                f"{parts[part]}: class folders differ from {parts[first]} ({', '.join(only)})"
            )
    folder = next(iter(parts.values()))
    if len(names) < 2:
        got = f"found {len(names)}" + (f" ({names[0]})" if names else "")
        raise DataError(f"{folder}: classification needs at least 2 class folders, {got}")
    return names


def _class_folders(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]


def list_images(folder: Path, classes: list[str], raw_dir: Path) -> Listing:
    """Every image file under each class folder (recursively, sorted), refusing symlinks that
    lead out of the repository; other files are skipped."""
    root = sources.repo_root(raw_dir)
    files, labels, skipped = [], [], []
    for code, name in enumerate(classes):
        found = 0
        for path in _walk(folder / name):
            sources.refuse_outside_repo(path, raw_dir, root)
            if path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
                labels.append(code)
                found += 1
            else:
                skipped.append(path)
        if not found:
            raise DataError(f"{folder / name}: class folder has no images (.png .jpg .bmp .gif)")
    return Listing(files, np.asarray(labels, dtype=np.int64), skipped)


def _walk(folder: Path) -> list[Path]:
    """Files under ``folder`` in a fixed order; hidden files and folders are not data."""
    out = []
    for here, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(Path(here) / n for n in sorted(names) if not n.startswith("."))
    return out


def split_files(
    listings: dict[str, Listing], cfg: ImagesConfig, seed: int, where: str
) -> dict[str, tuple[list[Path], np.ndarray]]:
    """Train/val/test file lists: stratified fractions, or val drawn from a given train/."""
    if "all" in listings:
        listing = listings["all"]
        index = split_indices(
            len(listing.files), cfg.val_fraction, cfg.test_fraction, seed, listing.labels, where
        )
        return {s: _pick(listing, rows) for s, rows in index.items()}
    train = listings["train"]
    keep, val = holdout(np.arange(len(train.files)), cfg.val_fraction, seed, train.labels, where)
    test = listings["test"]
    return {
        "train": _pick(train, keep),
        "val": _pick(train, val),
        "test": _pick(test, np.arange(len(test.files))),
    }


def _pick(listing: Listing, rows: np.ndarray) -> tuple[list[Path], np.ndarray]:
    return [listing.files[i] for i in rows], listing.labels[rows]


def decode_images(
    paths: Sequence[Path], size: Sequence[int], color_mode: str
) -> tuple[np.ndarray, Counter[str]]:
    """Decode ``paths`` into one (n, H, W, C) uint8 array (in parallel when there are many);
    also count the images' original Pillow modes."""
    height, width = size
    channels = 1 if color_mode == "grayscale" else 3
    pixels = np.empty((len(paths), height, width, channels), dtype=np.uint8)
    chunks = [list(paths[i : i + CHUNK]) for i in range(0, len(paths), CHUNK)]
    jobs = [(chunk, (height, width), color_mode) for chunk in chunks]
    modes: Counter[str] = Counter()
    started = time.perf_counter()
    _collect([_decode_chunk(job) for job in jobs[:1]], pixels, modes, 0)
    remaining = (time.perf_counter() - started) * (len(jobs) - 1)
    workers = min(os.cpu_count() or 1, 8)
    if remaining < POOL_AFTER_SECONDS or workers < 2:
        _collect(map(_decode_chunk, jobs[1:]), pixels, modes, CHUNK)
        return pixels, modes
    log.info("decoding %d images with %d processes", len(paths), workers)
    with ProcessPoolExecutor(workers, mp_context=_context()) as pool:
        _collect(pool.map(_decode_chunk, jobs[1:]), pixels, modes, CHUNK)
    return pixels, modes


def _context() -> multiprocessing.context.BaseContext:
    # fork starts workers in milliseconds; macOS and Windows need spawn.
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def _collect(
    results: Iterable[tuple[np.ndarray, list[str]]],
    pixels: np.ndarray,
    modes: Counter[str],
    start: int,
) -> None:
    """Copy decoded chunks into ``pixels`` from row ``start`` on; count their modes."""
    for chunk, found in results:
        pixels[start : start + len(chunk)] = chunk
        modes.update(found)
        start += len(chunk)


def _decode_chunk(job: tuple[list[Path], tuple[int, int], str]) -> tuple[np.ndarray, list[str]]:
    """One worker's share: pixels of every file in the chunk and their original modes."""
    paths, size, color_mode = job
    decoded = [decode_image(path, size, color_mode) for path in paths]
    return np.stack([pixels for pixels, _ in decoded]), [mode for _, mode in decoded]


def decode_image(path: Path, size: tuple[int, int], color_mode: str) -> tuple[np.ndarray, str]:
    """One image as (H, W, C) uint8 in ``color_mode`` (first frame of an animation); its mode."""
    from PIL import Image

    height, width = size
    try:
        with Image.open(path) as image:
            original = image.mode
            converted = image.convert(PILLOW_MODES[color_mode])
            if converted.size != (width, height):
                converted = converted.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({one_line(exc)})") from exc
    return (pixels[..., None] if pixels.ndim == 2 else pixels), original
