"""Class-folder trees under data/raw/ (the `images` and `text_folder` sources): the layout (one
sub-folder per class, or train/ and test/ each holding them), the class names, the files of
each class and their stratified split, all before any file is read.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfit.data import sources
from deepfit.data.errors import DataError
from deepfit.data.prepare import holdout, split_indices

# Parts of a tree: the whole folder, or its own train/ and test/ sub-folders.
ALL = "all"
PRESPLIT = ("train", "test")


@dataclass(frozen=True)
class Listing:
    """The files of every class and their class codes, and the files skipped for their suffix."""

    files: list[Path]
    labels: np.ndarray
    skipped: list[Path]


def tree_parts(root: Path) -> dict[str, Path]:
    """``{"train": root/train, "test": root/test}`` when both exist, else ``{"all": root}``."""
    if all((root / part).is_dir() for part in PRESPLIT):
        return {part: root / part for part in PRESPLIT}
    return {ALL: root}


def layout(parts: dict[str, Path]) -> str:
    """The manifest's name for the layout of ``parts``."""
    return "class_folders" if ALL in parts else "train_test_folders"


def class_names(
    parts: dict[str, Path], where: str, chosen: Sequence[str] | None = None
) -> list[str]:
    """Sorted class folder names; every part (train/ and test/) must have the same ones.

    ``chosen`` (params' ``classes``) picks class folders by name, in its order; each part must
    hold all of them and may hold others (aclImdb/train/ has unsup/).
    """
    if chosen is not None:
        for part in parts.values():
            absent = [name for name in chosen if not (part / name).is_dir()]
            if absent:
                raise DataError(f"{where}.classes: no class folder {part / absent[0]}")
        return list(chosen)
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


def list_files(
    folder: Path, classes: list[str], raw_dir: Path, suffixes: Collection[str], what: str
) -> Listing:
    """Every file with one of ``suffixes`` (any case) under each class folder, recursively and
    sorted, refusing symlinks that lead out of the repository; other files are skipped. A class
    without such files is a DataError saying it has no ``what``."""
    root = sources.repo_root(raw_dir)
    files, labels, skipped = [], [], []
    for code, name in enumerate(classes):
        found = 0
        for path in walk(folder / name):
            sources.refuse_outside_repo(path, raw_dir, root)
            if path.suffix.lower() in suffixes:
                files.append(path)
                labels.append(code)
                found += 1
            else:
                skipped.append(path)
        if not found:
            raise DataError(f"{folder / name}: class folder has no {what}")
    return Listing(files, np.asarray(labels, dtype=np.int64), skipped)


def walk(folder: Path) -> list[Path]:
    """Files under ``folder`` in a fixed order; hidden files and folders are not data."""
    out = []
    for here, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(Path(here) / n for n in sorted(names) if not n.startswith("."))
    return out


def split_files(
    listings: dict[str, Listing],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    where: str,
) -> dict[str, tuple[list[Path], np.ndarray]]:
    """Train/val/test file lists: stratified fractions, or val drawn from a given train/ (the
    test/ folder is the test split, whole; ``test_fraction`` is not used)."""
    if ALL in listings:
        listing = listings[ALL]
        index = split_indices(
            len(listing.files), val_fraction, test_fraction, seed, listing.labels, where
        )
        return {s: _pick(listing, rows) for s, rows in index.items()}
    train = listings["train"]
    keep, val = holdout(np.arange(len(train.files)), val_fraction, seed, train.labels, where)
    test = listings["test"]
    return {
        "train": _pick(train, keep),
        "val": _pick(train, val),
        "test": _pick(test, np.arange(len(test.files))),
    }


def _pick(listing: Listing, rows: np.ndarray) -> tuple[list[Path], np.ndarray]:
    return [listing.files[i] for i in rows], listing.labels[rows]


def skipped_files(listings: dict[str, Listing], root: Path) -> list[str]:
    """The skipped files of every part, relative to the tree's root."""
    return [str(p.relative_to(root)) for listing in listings.values() for p in listing.skipped]
