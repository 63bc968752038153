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
from pathlib import Path

import numpy as np

from deepfit.data import folders, sources
from deepfit.data.config import ImagesConfig
from deepfit.data.errors import DataError
from deepfit.data.prepare import Built
from deepfit.outputs import one_line

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
IMAGES = "images (.png .jpg .bmp .gif)"  # what a class folder without images lacks
PILLOW_MODES = {"grayscale": "L", "rgb": "RGB"}
# Stored pixels are 0..255; the model's Rescaling layer multiplies by this.
PIXEL_SCALE = 1.0 / 255.0
# Images per task. The first chunk is decoded in this process and timed: a worker pool starts
# only when the rest would take longer than POOL_AFTER_SECONDS, since for small PNGs one process
# (about 10,000 images/s) beats a pool on 2 busy cores.
CHUNK = 256
POOL_AFTER_SECONDS = 0.5


def build_images(cfg: ImagesConfig, seed: int, raw_dir: Path, where: str) -> Built:
    """Split a class-folder tree (stratified, or its own train/ and test/), decode into uint8."""
    root = sources.resolve_raw_dir(cfg.path, raw_dir, f"{where}.path")
    parts = folders.tree_parts(root)
    classes = folders.class_names(parts, where)
    listings = {
        part: folders.list_files(folder, classes, raw_dir, IMAGE_SUFFIXES, IMAGES)
        for part, folder in parts.items()
    }
    files = folders.split_files(listings, cfg.val_fraction, cfg.test_fraction, seed, where)
    # One decode over all splits (one worker pool); each split is then a slice of the result.
    paths = [path for split_paths, _ in files.values() for path in split_paths]
    pixels, modes = decode_images(paths, cfg.image_size, cfg.color_mode)
    bounds = np.cumsum([0, *(len(split_paths) for split_paths, _ in files.values())])
    splits = {
        split: {"x": pixels[bounds[i] : bounds[i + 1]], "y": labels}
        for i, (split, (_, labels)) in enumerate(files.items())
    }
    skipped = folders.skipped_files(listings, root)
    if skipped:
        log.warning("%s: skipped %d files that are not images: %s", root, len(skipped), skipped[:5])
    target = PILLOW_MODES[cfg.color_mode]
    details = {
        "layout": folders.layout(parts),
        "image_modes": dict(sorted(modes.items())),
        "converted": {mode: n for mode, n in sorted(modes.items()) if mode != target},
        "skipped_files": {"count": len(skipped), "first": skipped[:20]},
    }
    scale = {"method": "rescale_in_model", "scale": PIXEL_SCALE}
    return Built(splits, classes, feature_scale=scale, storage="npy", details=details)


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
