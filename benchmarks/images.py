"""D2: prepare throughput of `source: images` on a generated folder of small PNGs.

Writes ``--count`` 32x32 RGB PNGs in 10 class folders under a temporary data/raw/, then times
``prepare_dataset`` (list, split, decode, write, sha256) ``--repeats`` times in this process,
after one untimed run that pays the imports (scikit-learn, Pillow). Also times the whole
`prepare` stage once (a new Python process: imports included). Prints JSON.
Usage: ``.venv/bin/python benchmarks/images.py [--count 2000] [--repeats 5] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10


def make_folder(root: Path, count: int, side: int = 32) -> None:
    """``count`` random-texture PNGs, class c around brightness 20 + 20c."""
    rng = np.random.default_rng(0)
    for i in range(count):
        c = i % CLASSES
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(rng.normal(20 + 20 * c, 30, size=(side, side, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:05d}.png")


def in_process(work: Path, count: int, repeats: int) -> list[float]:
    """Seconds of ``prepare_dataset`` per repeat, after one warm-up run."""
    from pydantic import TypeAdapter

    from deepfit.data import DatasetConfig, prepare_dataset

    body = {"source": "images", "path": "pics", "image_size": [32, 32]}
    cfg = TypeAdapter(DatasetConfig).validate_python(body)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        prepare_dataset("pics", cfg, 2024, work / "data/prepared/pics", work / "data/raw")
        times.append(time.perf_counter() - started)
    return times[1:]


def stage_seconds(work: Path) -> float:
    """Wall time of `python -m deepfit.stages.prepare --dataset pics` in ``work``."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["datasets"]["pics"] = {"source": "images", "path": "pics", "image_size": [32, 32]}
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (work / "dvc.yaml").write_text("stages: {}\n")
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "deepfit.stages.prepare", "--dataset", "pics"]
    import deepfit

    # the stage runs the deepfit this process measured, not the venv's editable install
    env = {**os.environ, "PYTHONPATH": str(Path(deepfit.__file__).parents[1])}
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return time.perf_counter() - started


def measure(count: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_folder(work / "data/raw/pics", count)
        times = in_process(work, count, repeats)
        stage = stage_seconds(work)
    median = statistics.median(times)
    return {
        "images": count,
        "seconds": {"median": median, "min": min(times), "max": max(times), "n": len(times)},
        "images_per_second": count / median,
        "stage_seconds": stage,
        "stage_images_per_second": count / stage,
    }


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--count", type=int, default=2000)
    cli.add_argument("--repeats", type=int, default=5)
    cli.add_argument("--json", type=Path)
    args = cli.parse_args(argv)
    result = measure(args.count, args.repeats)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
