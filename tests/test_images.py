"""source: images — class folders decoded into uint8, memory-mapped and streamed; raw pixels into
the models; bad folders refused in one line with nothing written; RGB through the real stages.

The RGB run through `dvc repro` is the shared pipeline's `pix` (conftest's `pipeline`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import TypeAdapter, ValidationError

from deepfit.data import DataError, DatasetConfig, load_prepared, prepare_dataset
from deepfit.data.config import DataSpec
from helpers import PICS, error_line, make_workdir, run_stage, tiny_params

ADAPTER: TypeAdapter[DatasetConfig] = TypeAdapter(DatasetConfig)
SEED = 2024


def config(**body) -> DatasetConfig:
    body = {"source": "images", "path": "pics", "image_size": [8, 8], **body}
    return ADAPTER.validate_python(body)


def save_image(path: Path, value: int, mode: str = "RGB", size: tuple[int, int] = (10, 12)):
    """A small image of mode ``mode`` whose pixels are around ``value`` (width, height = size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    pixels = np.clip(rng.normal(value, 10, size=(size[1], size[0], *channels)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8), mode=mode).save(path)


def image_folder(root: Path, per_class: int = 10, classes=("cat", "dog"), suffix=".png") -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            save_image(root / name / f"{i:03d}{suffix}", 40 + 160 * c // max(1, len(classes) - 1))
    return root


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "raw"
    path.mkdir(parents=True)
    return path


def prepare(tmp_path: Path, cfg: DatasetConfig, name: str = "pics") -> tuple[dict, Path]:
    out = tmp_path / "data" / "prepared" / name
    manifest = prepare_dataset(name, cfg, seed=SEED, out_dir=out, raw_dir=tmp_path / "data/raw")
    return manifest, out


def refused(tmp_path: Path, cfg: DatasetConfig) -> str:
    """The one-line DataError of preparing ``cfg``; asserts nothing was written."""
    with pytest.raises(DataError) as info:
        prepare(tmp_path, cfg)
    assert not (tmp_path / "data" / "prepared").exists()
    message = str(info.value)
    assert "\n" not in message
    return message


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"image_size": [8]}, "image_size"),
        ({"image_size": [8, 0]}, "image_size"),
        ({"color_mode": "cmyk"}, "'grayscale' or 'rgb'"),
        ({"path": "../outside"}, "must stay inside data/raw/"),
        ({"labels": "inferred"}, "labels"),
    ],
)
def test_images_config_is_strict(body, needle):
    with pytest.raises(ValidationError, match=needle):
        config(**body)


# --- prepare ---------------------------------------------------------------------------------


def test_class_folders_become_stratified_uint8_splits_with_manifest(tmp_path, raw_dir):
    image_folder(raw_dir / "pics", per_class=20)
    (raw_dir / "pics" / "cat" / "notes.txt").write_text("not an image")
    manifest, out = prepare(tmp_path, config(color_mode="grayscale"))
    data = load_prepared(out)
    assert manifest["class_names"] == ["cat", "dog"]
    assert manifest["input_shape"] == [8, 8, 1]
    assert {s: i["samples"] for s, i in manifest["splits"].items()} == {
        "train": 26,
        "val": 6,
        "test": 8,
    }
    for split in (data.train, data.val, data.test):
        assert split[0].dtype == np.uint8 and isinstance(split[0], np.memmap)
        assert np.bincount(split[1]).tolist() == [len(split[1]) // 2] * 2  # stratified
    assert manifest["details"]["converted"] == {"RGB": 40}
    assert manifest["details"]["skipped_files"] == {"count": 1, "first": ["cat/notes.txt"]}
    assert data.spec.input_scale == pytest.approx(1 / 255)
    # the dark class stays dark: pixels are raw 0..255, not rescaled in prepare
    dark = data.train[0][data.train[1] == 0].mean()
    assert 20 < dark < 60 and data.train[0].max() > 150


def test_same_folder_and_seed_give_byte_identical_files(tmp_path, raw_dir):
    image_folder(raw_dir / "pics")
    first, _ = prepare(tmp_path, config())
    second, _ = prepare(tmp_path, config())
    assert first == second


def test_train_and_test_folders_are_kept_and_val_comes_from_train(tmp_path, raw_dir):
    image_folder(raw_dir / "pics" / "train", per_class=10)
    image_folder(raw_dir / "pics" / "test", per_class=3)
    manifest, _ = prepare(tmp_path, config(val_fraction=0.2))
    counts = {s: i["samples"] for s, i in manifest["splits"].items()}
    assert counts == {"train": 16, "val": 4, "test": 6}
    assert manifest["details"]["layout"] == "train_test_folders"


def test_mixed_modes_and_formats_are_converted_and_counted(tmp_path, raw_dir):
    image_folder(raw_dir / "pics", per_class=4)
    save_image(raw_dir / "pics" / "cat" / "gray.bmp", 40, mode="L")
    save_image(raw_dir / "pics" / "dog" / "alpha.png", 200, mode="RGBA")
    save_image(raw_dir / "pics" / "dog" / "photo.JPG", 200)
    save_image(raw_dir / "pics" / "cat" / "anim.gif", 40)
    manifest, out = prepare(tmp_path, config(color_mode="rgb", image_size=[6, 5]))
    assert manifest["details"]["image_modes"] == {"L": 1, "P": 1, "RGB": 9, "RGBA": 1}
    assert manifest["details"]["converted"] == {"L": 1, "P": 1, "RGBA": 1}
    assert load_prepared(out).test[0].shape[1:] == (6, 5, 3)


def test_many_images_decode_in_worker_processes_like_in_one(tmp_path, raw_dir, monkeypatch):
    from deepfit.data import images

    image_folder(raw_dir / "pics", per_class=30)
    one, _ = prepare(tmp_path, config())
    monkeypatch.setattr(images, "CHUNK", 7)
    monkeypatch.setattr(images, "POOL_AFTER_SECONDS", 0.0)
    pooled, _ = prepare(tmp_path, config())
    assert pooled == one


# --- bad input: one line naming the file, nothing written --------------------------------------


def test_an_image_that_does_not_decode_is_named(tmp_path, raw_dir):
    image_folder(raw_dir / "pics")
    broken = raw_dir / "pics" / "dog" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    message = refused(tmp_path, config())
    assert message.startswith(f"{broken}: not a readable image (")


def test_an_empty_class_folder_is_named(tmp_path, raw_dir):
    image_folder(raw_dir / "pics")
    (raw_dir / "pics" / "emu").mkdir()
    (raw_dir / "pics" / "emu" / "readme.txt").write_text("todo")
    message = refused(tmp_path, config())
    assert message == f"{raw_dir}/pics/emu: class folder has no images (.png .jpg .bmp .gif)"


def test_a_single_class_is_refused(tmp_path, raw_dir):
    image_folder(raw_dir / "pics", classes=("cat",))
    message = refused(tmp_path, config())
    assert message == (
        f"{raw_dir}/pics: classification needs at least 2 class folders, found 1 (cat)"
    )


def test_a_missing_folder_is_named(tmp_path, raw_dir):
    message = refused(tmp_path, config(path="nothere"))
    assert message == (
        f"datasets.pics.path: folder {raw_dir}/nothere not found (user data lives under {raw_dir}/)"
    )


def test_symlinked_image_outside_the_repository_is_refused(tmp_path, raw_dir):
    image_folder(raw_dir / "pics")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    save_image(outside, 40)
    link = raw_dir / "pics" / "cat" / "link.png"
    link.symlink_to(outside)
    try:
        message = refused(tmp_path, config())
    finally:
        outside.unlink()
    assert message == (
        f"{link}: symlink to {outside.resolve()}, outside the repository; copy the data under "
        f"{raw_dir}/ or track it with `dvc add`"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"source": "csv", "path": "t.csv", "target": "y", "task": "regression"},
        {"source": "npz", "path": "t.csv", "task": "regression", "kind": "vector"},
        {"source": "images", "path": "t.csv", "image_size": [4, 4]},
    ],
)
def test_every_user_source_refuses_a_symlink_out_of_the_repository(tmp_path, raw_dir, body):
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "t.csv").write_text("x,y\n1,2\n")
    (raw_dir / "t.csv").symlink_to(outside / ("." if body["source"] == "images" else "t.csv"))
    message = refused(tmp_path, ADAPTER.validate_python(body))
    target = outside if body["source"] == "images" else outside / "t.csv"
    assert message.startswith(f"{raw_dir}/t.csv: symlink to {target.resolve()}, outside the")


def test_a_symlink_inside_the_repository_is_followed(tmp_path, raw_dir):
    image_folder(tmp_path / "elsewhere")
    (raw_dir / "pics").symlink_to(tmp_path / "elsewhere")
    manifest, _ = prepare(tmp_path, config())
    assert manifest["class_names"] == ["cat", "dog"]


# --- models take raw pixels; training streams from the memory map ------------------------------


RAW = DataSpec((8, 8, 3), "image", "classification", 2, input_scale=1 / 255)


@pytest.mark.parametrize("name", ["cnn", "fnn", "gan"])
def test_image_models_rescale_raw_pixels_in_their_first_layer(name):
    from deepfit.models import get_spec

    spec = get_spec(name)
    model = spec.build(spec.config(), RAW)
    plain = spec.build(spec.config(), DataSpec((8, 8, 3), "image", "classification", 2))
    if name == "gan":
        assert model.rescale_real.scale == pytest.approx(1 / 255)
        assert plain.rescale_real is None
        return
    assert model.layers[1].name == "rescale" and model.layers[1].scale == pytest.approx(1 / 255)
    assert "rescale" not in [layer.name for layer in plain.layers]


def test_streamed_batches_match_the_arrays(tmp_path, raw_dir):
    from deepfit.train.loop import input_pipeline

    image_folder(raw_dir / "pics", per_class=15)
    _, out = prepare(tmp_path, config())
    data = load_prepared(out)
    train, val = input_pipeline(data, batch_size=4, seed=1, generative=False)
    seen = {}
    for xb, yb in train:
        for x, y in zip(xb.numpy(), yb.numpy(), strict=True):
            seen[x.tobytes()] = int(y)
    expected = {x.tobytes(): int(y) for x, y in zip(*data.train, strict=True)}
    assert seen == expected  # every training image once per epoch, with its own label
    xs = np.concatenate([xb.numpy() for xb, _ in val])
    np.testing.assert_array_equal(xs, data.val[0])  # validation in stored order
    assert xs.dtype == np.uint8


def test_gan_trains_on_raw_pixels(tmp_path, raw_dir):
    from deepfit.models import get_spec
    from deepfit.train.loop import input_pipeline

    image_folder(raw_dir / "pics", per_class=8)
    _, out = prepare(tmp_path, config())
    data = load_prepared(out)
    spec = get_spec("gan")
    model = spec.build(spec.config(generator_units=[8], discriminator_units=[8]), data.spec)
    import keras

    model.compile(d_optimizer=keras.optimizers.Adam(), g_optimizer=keras.optimizers.Adam())
    train, _ = input_pipeline(data, batch_size=4, seed=1, generative=True)
    history = model.fit(train, epochs=1, shuffle=False, verbose=0).history
    assert np.isfinite(history["d_loss"][0])
    real = np.asarray(data.train[0][:4])
    assert float(keras.ops.max(model.scaled(real))) <= 1.0


# --- the real stages on a folder of RGB PNGs ------------------------------------------------


@pytest.mark.slow
def test_rgb_folder_through_prepare_train_evaluate(pipeline):
    """The shared pipeline's `pix` run: a CNN on a folder of RGB PNGs, through `dvc repro`."""
    root, _ = pipeline
    manifest = json.loads((root / "data" / "prepared" / "pics" / "manifest.json").read_text())
    assert manifest["class_names"] == ["class_0", "class_1", "class_2"]
    metrics = json.loads((root / "reports" / "metrics" / "pix.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.5  # three brightness classes: far above chance
    import keras

    model = keras.saving.load_model(root / "models" / "pix" / "model.keras")
    x = np.load(root / "data" / "prepared" / "pics" / "test_x.npy")
    assert x.dtype == np.uint8 and x.shape[1:] == (8, 8, 3)
    raw_pixels = model.predict(x, verbose=0)  # the saved model takes the files' raw pixels
    assert np.allclose(raw_pixels.sum(axis=1), 1.0)


def test_prepare_stage_names_a_broken_image_in_one_line(tmp_path):
    raw = tiny_params({"pix": {"model": "cnn", "dataset": "pics"}})
    raw["datasets"]["pics"] = dict(PICS)
    work = make_workdir(tmp_path / "work", raw)
    image_folder(work / "data" / "raw" / "pics", per_class=10)
    (work / "data" / "raw" / "pics" / "cat" / "zero.png").write_bytes(b"")
    done = run_stage(work, "prepare", "--dataset", "pics")
    assert done.returncode == 2
    line = error_line(done, "prepare@pics")
    assert line.startswith(
        "deepfit prepare@pics: error: data/raw/pics/cat/zero.png: not a readable image ("
    )
    assert not (work / "data" / "prepared").exists()
