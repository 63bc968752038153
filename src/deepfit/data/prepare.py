"""Build train/val/test splits per source, fit scaling on train only, write them atomically."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepfit.data import sources, tables
from deepfit.data.config import (
    AddingConfig,
    CsvConfig,
    DatasetConfig,
    DigitsConfig,
    ImagesConfig,
    KerasConfig,
    NpzConfig,
    SunspotsConfig,
    TextConfig,
    TextFolderConfig,
    TranslationConfig,
)
from deepfit.data.errors import DataError
from deepfit.data.io import (
    MANIFEST,
    MANIFEST_FORMAT,
    SPLITS,
    VOCABULARY,
    array_info,
    pack_texts,
    sha256_file,
    write_npy,
    write_npz,
)
from deepfit.outputs import atomic_dir, one_line, write_json

log = logging.getLogger(__name__)

Split = dict[str, np.ndarray]  # "x", "y" and extras such as "years"
IDENTITY = {"mean": 0.0, "std": 1.0}


@dataclass(frozen=True)
class Built:
    """A dataset ready to write: arrays per split plus what the manifest must record."""

    splits: dict[str, Split]
    class_names: list[str] | None = None
    target_scale: dict[str, float] = field(default_factory=lambda: dict(IDENTITY))
    feature_scale: dict[str, Any] = field(default_factory=lambda: {"method": "none"})
    table: dict[str, Any] | None = None  # a CSV's columns and their fitted preprocessing
    # "npz": one archive per split, loaded whole; "npy": one .npy per array, x memory-mapped.
    storage: str = "npz"
    details: dict[str, Any] | None = None  # source-specific facts for the manifest
    # A text dataset's words, fitted on the training split (written to vocabulary.json).
    vocabulary: list[str] | None = None


def prepare_dataset(
    name: str, cfg: DatasetConfig, seed: int, out_dir: Path, raw_dir: Path
) -> dict[str, Any]:
    """Build ``name`` from ``cfg`` and replace ``out_dir`` with {train,val,test}.npz + manifest.

    Same config and seed give byte-identical files. Nothing is written under ``raw_dir``, and a
    failure leaves the previous ``out_dir`` as it was. Returns the manifest.
    """
    out_dir, raw_dir = Path(out_dir), Path(raw_dir)
    where = f"datasets.{name}"
    _refuse_raw(out_dir, raw_dir)
    built = BUILDERS[cfg.source](cfg, seed, raw_dir, where)
    _check_built(built, where)
    with atomic_dir(out_dir) as staging:
        splits = {split: _write_split(staging, split, built) for split in SPLITS}
        manifest = _manifest(name, cfg, seed, built, splits)
        if built.vocabulary is not None:
            path = write_json(staging / VOCABULARY, built.vocabulary)
            sha = sha256_file(path)
            manifest["vocabulary"] = {
                "file": VOCABULARY,
                "sha256": sha,
                "words": len(built.vocabulary),
            }
        write_json(staging / MANIFEST, manifest)
    log.info("%s: %s", where, ", ".join(f"{s} {splits[s]['samples']}" for s in SPLITS))
    return manifest


def _refuse_raw(out_dir: Path, raw_dir: Path) -> None:
    out, raw = out_dir.resolve(), raw_dir.resolve()
    # Replacing a folder that holds data/raw/ would delete the user's files with it.
    if out.is_relative_to(raw) or raw.is_relative_to(out):
        raise DataError(f"{out_dir}: refusing to write here; {raw_dir}/ holds user files only")


def _check_built(built: Built, where: str) -> None:
    for split in SPLITS:
        x, y = built.splits[split]["x"], built.splits[split]["y"]
        if len(x) == 0:
            sizes = ", ".join(f"{s} {len(built.splits[s]['x'])}" for s in SPLITS)
            raise DataError(f"{where}: too little data, the {split} split is empty ({sizes})")
        if len(x) != len(y):
            raise DataError(f"{where}: {split} has {len(x)} inputs but {len(y)} targets")
        sources.check_finite(x, f"{where} ({split} inputs after scaling)")


def _write_split(staging: Path, split: str, built: Built) -> dict[str, Any]:
    """Write one split in the built storage format; return its manifest entry."""
    arrays = built.splits[split]
    info: dict[str, Any] = {"samples": len(arrays["x"])}
    if built.storage == "npy":
        files = {}
        for key in sorted(arrays):
            path = staging / f"{split}_{key}.npy"
            write_npy(path, arrays[key])
            files[key] = {"file": path.name, "sha256": sha256_file(path)}
        info.update(format="npy", files=files)
    else:
        path = staging / f"{split}.npz"
        write_npz(path, pack_texts(arrays))
        info.update(file=path.name, sha256=sha256_file(path))
    info["arrays"] = {key: array_info(arrays[key]) for key in sorted(arrays)}
    return info


def _manifest(
    name: str, cfg: DatasetConfig, seed: int, built: Built, splits: dict[str, Any]
) -> dict[str, Any]:
    kind, task = cfg.kind_and_task()
    train = built.splits["train"]
    classes = built.class_names
    table = {"table": built.table} if built.table is not None else {}
    return {
        "format": MANIFEST_FORMAT,
        "dataset": name,
        "source": cfg.source,
        "kind": kind,
        "task": task,
        "input_shape": list(train["x"].shape[1:]),
        "n_outputs": len(classes) if classes is not None else int(train["y"].shape[1]),
        "class_names": classes,
        "target_scale": built.target_scale,
        "feature_scale": built.feature_scale,
        "seed": seed,
        "config": cfg.model_dump(mode="json"),
        "splits": splits,
        **table,
        **({"details": built.details} if built.details else {}),
    }


# --- splitting -------------------------------------------------------------------------------


def holdout(
    index: np.ndarray, size: float, seed: int, labels: np.ndarray | None, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``index`` and hold out ``size`` of it (a fraction, or a count if an int),
    stratified by ``labels`` if given."""
    from sklearn.model_selection import train_test_split

    try:
        keep, held = train_test_split(
            index, test_size=size, random_state=seed, shuffle=True, stratify=labels
        )
    except ValueError as exc:
        raise DataError(f"{where}: cannot split {len(index)} samples ({one_line(exc)})") from exc
    return keep, held


def split_indices(
    n: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    labels: np.ndarray | None,
    where: str,
) -> dict[str, np.ndarray]:
    """Shuffled train/val/test indices of ``n`` samples, stratified by ``labels`` if given."""
    rest, test = holdout(np.arange(n), test_fraction, seed, labels, where)
    rest_labels = None if labels is None else labels[rest]
    train, val = holdout(rest, val_fraction / (1.0 - test_fraction), seed, rest_labels, where)
    return {"train": train, "val": val, "test": test}


def take(arrays: Split, index: dict[str, np.ndarray]) -> dict[str, Split]:
    """The rows of every array for each split."""
    return {split: {k: v[rows] for k, v in arrays.items()} for split, rows in index.items()}


# --- scaling (always fitted on train) --------------------------------------------------------


def fit_feature_scale(x_train: np.ndarray, kind: str) -> dict[str, Any]:
    """Images: divide by the train max |value|; vectors/sequences: per-feature train mean/std."""
    if kind == "image":
        peak = float(np.abs(x_train).max(initial=0.0))
        return {"method": "divide_by_train_max", "max": peak or 1.0}
    axes = tuple(range(x_train.ndim - 1))  # statistics per feature = last axis
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    std[std == 0] = 1.0  # a constant feature stays constant instead of dividing by zero
    return {"method": "standardize", "mean": mean.tolist(), "std": std.tolist()}


def apply_feature_scale(x: np.ndarray, scale: dict[str, Any]) -> np.ndarray:
    """``x`` scaled as ``fit_feature_scale`` decided, as float32."""
    if scale["method"] == "divide_by_train_max":
        return (x / np.float64(scale["max"])).astype(np.float32)
    return ((x - np.asarray(scale["mean"])) / np.asarray(scale["std"])).astype(np.float32)


def scale_features(splits: dict[str, Split], kind: str) -> dict[str, Any]:
    """Fit on train, scale every split in place; return the scale for the manifest."""
    scale = fit_feature_scale(splits["train"]["x"], kind)
    for split in splits.values():
        split["x"] = apply_feature_scale(split["x"], scale)
    return scale


def scale_targets(splits: dict[str, Split]) -> dict[str, float]:
    """Standardise regression targets with the train mean/std; return them for the manifest."""
    train = splits["train"]["y"]
    mean, std = float(train.mean(dtype=np.float64)), float(train.std(dtype=np.float64))
    std = std or 1.0
    for split in splits.values():
        split["y"] = ((split["y"] - mean) / std).astype(np.float32)
    return {"mean": mean, "std": std}


def encode_labels(values: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """Map sorted unique labels to 0..K-1 (int64); return the codes and the class names."""
    if np.issubdtype(values.dtype, np.floating):
        sources.check_finite(values, where)
    classes, codes = np.unique(values, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{where}: classification needs at least 2 classes, found {len(classes)}")
    return codes.reshape(-1).astype(np.int64), [_class_name(c) for c in classes.tolist()]


def _class_name(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- one builder per source ------------------------------------------------------------------


def build_digits(cfg: DigitsConfig, seed: int, raw_dir: Path, where: str) -> Built:
    x, y = sources.load_digits()
    index = split_indices(len(y), cfg.val_fraction, cfg.test_fraction, seed, y, where)
    splits = take({"x": x, "y": y}, index)
    scale = scale_features(splits, "image")
    return Built(splits, [str(d) for d in range(10)], feature_scale=scale)


def build_sunspots(cfg: SunspotsConfig, seed: int, raw_dir: Path, where: str) -> Built:
    years, values = sources.load_sunspots()
    n = len(values) - cfg.window
    n_train = n - cfg.val_size - cfg.test_size
    if n_train < 2:
        raise DataError(
            f"{where}: window + val_size + test_size = {cfg.window + cfg.val_size + cfg.test_size}"
            f" leaves {max(n_train, 0)} training samples; sunspots has {len(values)} years"
            f" ({years[0]}-{years[-1]})"
        )
    # Train targets are years window..window+n_train-1; their statistics scale the whole series.
    train_targets = values[cfg.window : cfg.window + n_train]
    scale = {"mean": float(train_targets.mean()), "std": float(train_targets.std()) or 1.0}
    z = (values - scale["mean"]) / scale["std"]
    windows = np.lib.stride_tricks.sliding_window_view(z, cfg.window)[:-1]
    arrays = {
        "x": windows[..., None].astype(np.float32),
        "y": z[cfg.window :, None].astype(np.float32),
        "years": years[cfg.window :],
    }
    # Contiguous blocks in time order: the last test_size targets are test, val just before.
    bounds = np.cumsum([0, n_train, cfg.val_size, cfg.test_size])
    index = {s: np.arange(bounds[i], bounds[i + 1]) for i, s in enumerate(SPLITS)}
    return Built(take(arrays, index), target_scale=scale, feature_scale={"method": "target_scale"})


def build_adding(cfg: AddingConfig, seed: int, raw_dir: Path, where: str) -> Built:
    # One stream per split, so the test set stays the same when only train_size changes.
    streams = np.random.SeedSequence(seed).spawn(len(SPLITS))
    sizes = {"train": cfg.train_size, "val": cfg.val_size, "test": cfg.test_size}
    splits = {}
    for split, stream in zip(SPLITS, streams, strict=True):
        x, y = sources.adding_problem(cfg.length, sizes[split], np.random.default_rng(stream))
        splits[split] = {"x": x, "y": y}
    return Built(splits)


def build_csv(cfg: CsvConfig, seed: int, raw_dir: Path, where: str) -> Built:
    """Read the table, split its rows, fit the preprocessing on train, encode every split."""
    file = sources.resolve_raw(cfg.path, raw_dir, f"{where}.path")
    frame = tables.read_table(file)
    features = tables.feature_names(frame, cfg, file, where)
    kinds = tables.check_columns(frame, features, cfg, file, where)
    y, classes = _table_targets(frame[cfg.target], cfg.task, f"{file} (target)")
    labels = y if classes is not None else None
    rows = np.arange(len(frame), dtype=np.int64)  # 0-based data rows: line = row + 2
    index = split_indices(len(y), cfg.val_fraction, cfg.test_fraction, seed, labels, where)
    dtypes = {name: str(frame[name].dtype) for name in features}
    table = tables.fit_table(frame.iloc[index["train"]], kinds, dtypes, cfg)
    splits = {
        split: {"x": tables.encode(frame.iloc[at], table), "y": y[at], "row": rows[at]}
        for split, at in index.items()
    }
    table["example"] = tables.example_rows(frame.iloc[index["val"]], table)
    target_scale = scale_targets(splits) if classes is None else dict(IDENTITY)
    scale = {"method": "table", "features": table["encoded"]}
    return Built(splits, classes, target_scale, scale, table)


def _table_targets(column: Any, task: str, where: str) -> tuple[np.ndarray, list[str] | None]:
    """Class codes and names (numeric labels sort as numbers), or regression targets (n, 1)."""
    values = column.to_numpy()
    if task == "classification":
        if values.dtype == object:
            values = values.astype(str)
        return encode_labels(values, where)
    return values.astype(np.float64)[:, None], None


def build_npz(cfg: NpzConfig, seed: int, raw_dir: Path, where: str) -> Built:
    file = sources.resolve_raw(cfg.path, raw_dir, f"{where}.path")
    x, y = sources.read_npz(file)
    x = sources.shape_for_kind(x, cfg.kind, file)
    y = sources.targets_for_task(y, cfg.task, file)
    if len(x) != len(y):
        raise DataError(f"{file}: x has {len(x)} samples but y has {len(y)}")
    return _build_user(x, y, cfg, seed, cfg.kind, str(file))


def _build_user(
    x: np.ndarray, y: np.ndarray, cfg: CsvConfig | NpzConfig, seed: int, kind: str, where: str
) -> Built:
    """Split (stratified for classification) and scale a user's x/y; ``where`` names the file."""
    sources.check_finite(x, where)
    if cfg.task == "classification":
        y, classes = encode_labels(y, f"{where} (target)")
    else:
        sources.check_finite(y, f"{where} (target)")
        classes = None
    labels = y if classes is not None else None
    index = split_indices(len(y), cfg.val_fraction, cfg.test_fraction, seed, labels, where)
    splits = take({"x": x, "y": y}, index)
    feature_scale = scale_features(splits, kind)
    target_scale = scale_targets(splits) if classes is None else dict(IDENTITY)
    return Built(splits, classes, target_scale, feature_scale)


def build_images(cfg: ImagesConfig, seed: int, raw_dir: Path, where: str) -> Built:
    from deepfit.data import images  # imports this module; Pillow is needed by this source only

    return images.build_images(cfg, seed, raw_dir, where)


def build_keras(cfg: KerasConfig, seed: int, raw_dir: Path, where: str) -> Built:
    if cfg.name == "imdb":
        from deepfit.data import text_folder  # imports this module

        return text_folder.build_imdb(cfg, seed, where)
    (x_pool, y_pool), (x_test, y_test) = sources.load_keras(cfg.name, f"{where}.name")
    y_pool, y_test = y_pool.reshape(-1).astype(np.int64), y_test.reshape(-1).astype(np.int64)
    train, val = keras_rows(y_pool, cfg, seed, where)
    # Pixels are 0..255 by definition, so the scale is fixed rather than fitted.
    scale = {"method": "divide", "value": 255.0}
    splits = {
        "train": {"x": _keras_images(x_pool[train]), "y": y_pool[train]},
        "val": {"x": _keras_images(x_pool[val]), "y": y_pool[val]},
        "test": {"x": _keras_images(x_test), "y": y_test},
    }
    return Built(splits, list(sources.KERAS_CLASSES[cfg.name]), feature_scale=scale)


def keras_rows(
    y_pool: np.ndarray, cfg: KerasConfig, seed: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Train and val rows of a Keras training set: at most ``limit`` of them (stratified), and
    ``val_fraction`` of those held out for validation."""
    index = np.arange(len(y_pool))
    if cfg.limit is not None and cfg.limit < len(index):
        _, index = holdout(index, cfg.limit, seed, y_pool, where)
    return holdout(index, cfg.val_fraction, seed, y_pool[index], where)


def _keras_images(x: np.ndarray) -> np.ndarray:
    images = x.astype(np.float32) / np.float32(255.0)
    return images[..., None] if images.ndim == 3 else images


def build_text(cfg: TextConfig, seed: int, raw_dir: Path, where: str) -> Built:
    from deepfit.data import text  # imports this module

    return text.build_text(cfg, seed, raw_dir, where)


def build_text_folder(cfg: TextFolderConfig, seed: int, raw_dir: Path, where: str) -> Built:
    from deepfit.data import text_folder  # imports this module

    return text_folder.build_text_folder(cfg, seed, raw_dir, where)


def build_translation(cfg: TranslationConfig, seed: int, raw_dir: Path, where: str) -> Built:
    from deepfit.data import translation  # imports this module

    return translation.build_translation(cfg, seed, raw_dir, where)


BUILDERS: dict[str, Callable[[Any, int, Path, str], Built]] = {
    "digits": build_digits,
    "sunspots": build_sunspots,
    "adding": build_adding,
    "csv": build_csv,
    "npz": build_npz,
    "images": build_images,
    "keras": build_keras,
    "text": build_text,
    "text_folder": build_text_folder,
    "translation": build_translation,
}
