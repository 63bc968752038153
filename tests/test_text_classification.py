"""Text classification: the `text_folder` source (class folders of .txt files) and keras' IMDB as
text, the strict config, raw strings stored as UTF-8 bytes + offsets, the vocabulary fitted on
the training split, the TF-IDF baseline, bad folders refused in one line by the real prepare
stage, and (slow) prepare -> baseline -> train -> evaluate of an `fnn` whose logged MLflow model
takes raw strings.
"""

from __future__ import annotations

import json
import random
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from deepfit.config import ConfigError, parse_params
from deepfit.data import DataError, DatasetConfig, load_prepared, prepare_dataset
from deepfit.data.io import pack_texts, unpack_texts
from deepfit.evaluate import baselines
from helpers import error_line, make_workdir, prepare_refuses, run_stage, snapshot, tiny_params

ADAPTER: TypeAdapter[DatasetConfig] = TypeAdapter(DatasetConfig)
SEED = 2024
# Words that mark each class, and words both classes use.
CLASS_WORDS = {
    "neg": ["awful", "boring", "bad", "dull", "hated"],
    "pos": ["great", "superb", "loved", "moving", "wonderful"],
}
COMMON = ["the", "film", "movie", "was", "and", "a", "plot", "actors", "it", "really"]


def config(**body: Any) -> DatasetConfig:
    return ADAPTER.validate_python({"source": "text_folder", "path": "reviews", **body})


def review(rng: random.Random, label: str, words: int = 12) -> str:
    """A short seeded review: common words and a few words of its class, with punctuation."""
    chosen = [rng.choice(COMMON) for _ in range(words - 3)]
    chosen += [rng.choice(CLASS_WORDS[label]) for _ in range(3)]
    rng.shuffle(chosen)
    return " ".join(chosen).capitalize() + "!\n"


def write_reviews(folder: Path, per_class: int = 40, seed: int = 0) -> Path:
    """``folder``/{neg,pos}/NNN.txt, ``per_class`` seeded reviews each."""
    rng = random.Random(seed)
    for label in CLASS_WORDS:
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / label / f"{i:03d}.txt").write_text(review(rng, label), encoding="utf-8")
    return folder


def prepare(tmp_path: Path, cfg: DatasetConfig, name: str = "reviews") -> tuple[dict, Any]:
    out = tmp_path / "data" / "prepared" / name
    raw_dir = tmp_path / "data" / "raw"
    manifest = prepare_dataset(name, cfg, seed=SEED, out_dir=out, raw_dir=raw_dir)
    return manifest, load_prepared(out)


def text_params(runs: dict | None = None, **dataset: Any) -> dict:
    """The tiny params with a text_folder dataset `reviews` and ``runs`` (default: none)."""
    raw = tiny_params(runs)
    raw["datasets"]["reviews"] = {"source": "text_folder", "path": "reviews", **dataset}
    return raw


# --- config ----------------------------------------------------------------------------------


def test_text_folder_defaults() -> None:
    cfg = config()
    assert (cfg.vocabulary_size, cfg.sequence_length) == (20_000, 200)
    assert (cfg.val_fraction, cfg.test_fraction, cfg.classes) == (0.15, 0.2, None)
    assert cfg.kind_and_task() == ("text", "classification")
    imdb = ADAPTER.validate_python({"source": "keras", "name": "imdb", "sequence_length": 80})
    assert imdb.kind_and_task() == ("text", "classification")
    assert imdb.text_settings() == (20_000, 80)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"vocabulary_size": 2}, "greater than or equal to 3"),
        ({"sequence_length": 0}, "greater than or equal to 1"),
        ({"sequence_length": "200"}, "valid integer"),
        ({"max_tokens": 100}, "Extra inputs are not permitted"),
        ({"classes": ["pos"]}, "at least 2 items"),
        ({"classes": ["pos", "pos"]}, "names a class folder twice"),
        ({"classes": ["pos", "../neg"]}, "names of sub-folders, not paths"),
        ({"path": "../outside"}, "must stay inside data/raw/"),
        ({"val_fraction": 0.4, "test_fraction": 0.4}, "must be < 0.8"),
    ],
)
def test_text_config_is_strict(body: dict, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        config(**body)


def test_only_keras_imdb_takes_text_settings() -> None:
    body = {"source": "keras", "name": "mnist", "vocabulary_size": 100}
    with pytest.raises(ValidationError, match="vocabulary_size: only name: imdb is text"):
        ADAPTER.validate_python(body)


@pytest.mark.parametrize(
    ("model", "needs"),
    [
        ("cnn", "image"),
        ("rnn", "image or sequence or tokens"),
        ("gan", "image"),
        ("seq2seq", "translation"),
    ],
)
def test_only_fnn_and_lstm_take_text(model: str, needs: str) -> None:
    for accepted in ("fnn", "lstm"):
        parse_params(text_params({"ok": {"model": accepted, "dataset": "reviews"}}))
    with pytest.raises(ConfigError) as error:
        parse_params(text_params({"bow": {"model": model, "dataset": "reviews"}}))
    assert str(error.value) == (
        f"params.yaml: runs.bow: model {model!r} needs {needs} data, "
        "but dataset 'reviews' is text data"
    )


def test_the_text_baseline_grid_is_validated() -> None:
    raw = text_params()
    raw["baselines"]["text_classification"]["tfidf_logreg"]["min_count"] = [2]
    with pytest.raises(ConfigError, match=r"tfidf_logreg\.min_count: unknown key; allowed keys: "):
        parse_params(raw)


# --- storage and prepare ---------------------------------------------------------------------


def test_texts_round_trip_through_utf8_bytes_and_offsets() -> None:
    texts = np.array(["café ☕", "", "line\nbreak", "\u2028odd\x00"], dtype=object)
    packed = pack_texts({"x": texts, "y": np.arange(4)})
    assert sorted(packed) == ["x_offsets", "x_utf8", "y"]
    assert packed["x_utf8"].dtype == np.uint8 and packed["x_offsets"].tolist()[0] == 0
    back = unpack_texts(packed)
    assert back["x"].tolist() == texts.tolist() and back["y"].tolist() == [0, 1, 2, 3]


def test_class_folders_become_stratified_text_splits_with_train_vocabulary(tmp_path: Path) -> None:
    folder = write_reviews(tmp_path / "data" / "raw" / "reviews")
    (folder / "pos" / "notes.md").write_text("not a sample")
    (folder / "pos" / "bom.txt").write_bytes("\ufeffCafé crème, great!".encode())
    manifest, data = prepare(tmp_path, config(vocabulary_size=12, sequence_length=7))
    assert manifest["class_names"] == ["neg", "pos"] and manifest["kind"] == "text"
    assert manifest["details"]["class_counts"] == {
        "train": {"neg": 26, "pos": 26},
        "val": {"neg": 6, "pos": 6},
        "test": {"neg": 8, "pos": 9},
    }
    assert manifest["details"]["skipped_files"] == {"count": 1, "first": ["pos/notes.md"]}
    assert manifest["vocabulary"]["words"] == 10 and len(data.spec.vocabulary) == 10
    assert data.spec.sequence_length == 7 and data.spec.kind == "text"
    # each text kept as written (the byte-order mark dropped), with its own file and label
    texts = {}
    for split in ("train", "val", "test"):
        (x, y), files = getattr(data, split), data.extras[split]["file"]
        assert [name.split("/")[0] for name in files] == [["neg", "pos"][label] for label in y]
        texts.update(zip(files.tolist(), x.tolist(), strict=True))
    assert len(texts) == 81 and texts["pos/bom.txt"] == "Café crème, great!"
    assert texts["neg/000.txt"] == (folder / "neg" / "000.txt").read_text()


def test_vocabulary_comes_from_the_training_split_only(tmp_path: Path) -> None:
    folder = write_reviews(tmp_path / "data" / "raw" / "reviews" / "train", per_class=10)
    write_reviews(folder.parent / "test", per_class=3, seed=1)
    (folder.parent / "test" / "pos" / "new.txt").write_text("Zyzzyva zyzzyva, great")
    manifest, data = prepare(tmp_path, config(val_fraction=0.2))
    counts = {split: info["samples"] for split, info in manifest["splits"].items()}
    assert counts == {"train": 16, "val": 4, "test": 7}
    assert manifest["details"]["layout"] == "train_test_folders"
    assert "zyzzyva" not in data.spec.vocabulary and "great" in data.spec.vocabulary
    assert "Zyzzyva zyzzyva, great" in data.test[0].tolist()


def test_classes_pick_folders_so_aclimdb_unsup_is_left_out(tmp_path: Path) -> None:
    root = tmp_path / "data" / "raw" / "reviews"
    write_reviews(root / "train", per_class=10)
    write_reviews(root / "test", per_class=5)
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0.txt").write_text("no label")
    (root / "imdb.vocab").write_text("the\nfilm\n")
    with pytest.raises(DataError, match=r"class folders differ from .*\(unsup\)"):
        prepare(tmp_path, config())
    manifest, _ = prepare(tmp_path, config(classes=["pos", "neg"]))
    assert manifest["class_names"] == ["pos", "neg"]
    assert manifest["details"]["class_counts"]["test"] == {"pos": 5, "neg": 5}


def test_same_folder_and_seed_give_byte_identical_files(tmp_path: Path) -> None:
    write_reviews(tmp_path / "data" / "raw" / "reviews", per_class=12)
    first, _ = prepare(tmp_path, config(), name="a")
    again, _ = prepare(tmp_path, config(), name="b")
    assert first["splits"] == again["splits"] and first["vocabulary"] == again["vocabulary"]


# --- keras.datasets.imdb (small files in a temporary Keras cache; the network is blocked) -------


@pytest.fixture
def imdb_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """A temporary Keras home with a small imdb.npz and imdb_word_index.json in Keras' format;
    downloads fail and are recorded. Keras checks both files against the official hashes, which
    small files cannot match: only that comparison is stubbed."""
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    home = tmp_path / "keras_home"
    (home / "datasets").mkdir(parents=True)
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(file_utils, "validate_file", lambda *a, **k: True)
    attempts: list[str] = []

    def offline(url: str, *args: Any, **kwargs: Any) -> None:
        attempts.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    words = ["the", "film", "was", "great", "awful", *COMMON[4:]]
    index = {word: i + 1 for i, word in enumerate(words)}  # ids from 1, by frequency
    rng = random.Random(3)
    splits = {}
    for split, n in (("train", 40), ("test", 10)):
        labels = [i % 2 for i in range(n)]
        ids = np.empty(n, dtype=object)  # ragged lists of word ids, as Keras stores them
        for i, label in enumerate(labels):
            ids[i] = [1, 2, 3, index["great" if label else "awful"], rng.randint(6, len(words))]
        splits[f"x_{split}"], splits[f"y_{split}"] = ids, np.array(labels, dtype=np.int64)
    np.savez(home / "datasets" / "imdb.npz", **splits)
    (home / "datasets" / "imdb_word_index.json").write_text(json.dumps(index))
    return home / "datasets", attempts


def test_keras_imdb_reviews_are_decoded_into_words(tmp_path: Path, imdb_cache) -> None:
    _, attempts = imdb_cache
    cfg = ADAPTER.validate_python(
        {"source": "keras", "name": "imdb", "limit": 30, "val_fraction": 0.2, "sequence_length": 9}
    )
    manifest, data = prepare(tmp_path, cfg)
    assert attempts == []  # read from the cache, no download tried
    assert {s: i["samples"] for s, i in manifest["splits"].items()} == {
        "train": 24,
        "val": 6,
        "test": 10,
    }
    assert manifest["class_names"] == ["neg", "pos"] and data.spec.kind == "text"
    for text, label in zip(*data.test, strict=True):
        assert text.startswith("the film was ") and text.split()[3] == ["awful", "great"][label]
    assert {"the", "great", "awful"} <= set(data.spec.vocabulary)


def test_keras_imdb_offline_without_cache_is_one_line(tmp_path: Path, imdb_cache) -> None:
    cache, attempts = imdb_cache
    (cache / "imdb.npz").unlink()
    cfg = ADAPTER.validate_python({"source": "keras", "name": "imdb"})
    with pytest.raises(DataError) as caught:
        prepare(tmp_path, cfg)
    message = str(caught.value)
    assert message.startswith(
        "datasets.reviews.name: keras dataset 'imdb' is not in the Keras cache"
    )
    assert "\n" not in message and len(attempts) == 1 and attempts[0].endswith("imdb.npz")
    assert not (tmp_path / "data" / "prepared").exists()


# --- the TF-IDF baseline ---------------------------------------------------------------------


def test_tfidf_logreg_is_tuned_on_validation_and_reads_raw_strings() -> None:
    rng = random.Random(5)
    split = {}
    for name, n in (("train", 60), ("val", 20), ("test", 20)):
        labels = [i % 2 for i in range(n)]
        texts = [review(rng, ["neg", "pos"][label]) for label in labels]
        split[name] = (np.array(texts, dtype=object), np.array(labels))
    # One feature (the most frequent word) cannot tell the classes apart: validation says so.
    grid = {"max_features": [1, 1000], "ngram_range": [[1, 2]], "C": [10.0]}
    found = baselines.tfidf_logreg(split["train"], split["val"], split["test"], grid, seed=0)
    assert found["accuracy"] == 1.0 and found["params"]["max_features"] == 1000
    assert found["n_train"] == 60 and len(found["predictions"]) == 20
    with pytest.raises(ValueError, match=r"'ngram_range' values must be \[min_n, max_n\]"):
        baselines.tfidf_logreg(*split.values(), {"ngram_range": [[2, 1]]}, seed=0)


# --- bad input: one line naming the key or file, exit 2, nothing written ------------------------


def _one_class(root: Path) -> str:
    write_reviews(root)
    for path in (root / "neg").iterdir():
        path.unlink()
    (root / "neg").rmdir()
    return f"{root}: classification needs at least 2 class folders, found 1 (pos)"


def _not_utf8(root: Path) -> str:
    write_reviews(root)
    (root / "neg" / "latin1.txt").write_bytes("Très bon film".encode("latin-1"))
    return (
        f"{root}/neg/latin1.txt: not UTF-8 (byte 0xe8 at byte offset 2 cannot be decoded: "
        "invalid continuation byte)"
    )


def _empty_folder(root: Path) -> str:
    root.mkdir(parents=True)
    return f"{root}: classification needs at least 2 class folders, found 0"


def _empty_class(root: Path) -> str:
    write_reviews(root)
    (root / "meh").mkdir()
    return f"{root}/meh: class folder has no .txt files"


def _no_txt_files(root: Path) -> str:
    for label in ("neg", "pos"):
        (root / label).mkdir(parents=True)
        (root / label / "review.md").write_text("# not a .txt file")
    return f"{root}/neg: class folder has no .txt files"


def _empty_file(root: Path) -> str:
    write_reviews(root)
    (root / "pos" / "blank.txt").write_text(" \n")
    return f"{root}/pos/blank.txt: the file holds no text; each .txt file is one sample"


def _missing_folder(root: Path) -> str:
    return (
        "datasets.reviews.path: folder data/raw/reviews not found (user data lives under data/raw/)"
    )


def _missing_class(root: Path) -> str:
    write_reviews(root)
    return "datasets.reviews.classes: no class folder data/raw/reviews/meh"


BAD_FOLDERS = [
    ("a folder with one class", _one_class, {}),
    ("a file that is not UTF-8", _not_utf8, {}),
    ("an empty folder", _empty_folder, {}),
    ("an empty class folder", _empty_class, {}),
    ("no .txt files", _no_txt_files, {}),
    ("an empty .txt file", _empty_file, {}),
    ("no folder", _missing_folder, {}),
    ("a chosen class that is not there", _missing_class, {"classes": ["pos", "meh"]}),
]


@pytest.mark.parametrize(
    ("case", "make", "dataset"), BAD_FOLDERS, ids=[case for case, _, _ in BAD_FOLDERS]
)
def test_bad_text_folders_stop_prepare_in_one_line(
    tmp_path: Path, monkeypatch, capsys, case: str, make, dataset: dict
) -> None:
    root = make_workdir(tmp_path / "work", text_params(**dataset))
    # The stage runs in root, so the files it names are relative to it.
    message = make(root / "data" / "raw" / "reviews").replace(f"{root}/", "")
    error = prepare_refuses(root, "reviews", monkeypatch, capsys)
    assert error == f"deepfit prepare@reviews: error: {message}"
    assert not (root / "data" / "prepared").exists()


def test_a_single_class_stops_the_prepare_process_in_one_line(tmp_path: Path) -> None:
    root = make_workdir(tmp_path / "work", text_params())
    message = _one_class(root / "data" / "raw" / "reviews").replace(f"{root}/", "")
    before = snapshot(root)
    done = run_stage(root, "prepare", "--dataset", "reviews")
    assert done.returncode == 2
    assert error_line(done, "prepare@reviews") == f"deepfit prepare@reviews: error: {message}"
    assert snapshot(root) == before


# --- the real stages on a tiny generated folder -------------------------------------------------


@pytest.mark.slow
def test_fnn_on_a_text_folder_through_the_stages_and_mlflow(tmp_path: Path) -> None:
    """prepare -> baseline -> train -> evaluate; then the logged model on raw strings."""
    import mlflow
    import pandas as pd

    run = {"model": "fnn", "dataset": "reviews", "units": [16], "dropout": 0.0}
    run["train"] = {"epochs": 6, "batch_size": 8, "optimizer": {"learning_rate": 1.0e-2}}
    raw = text_params({"bow": run}, vocabulary_size=200, sequence_length=16)
    raw["train"]["gradients"]["samples"] = 8
    root = make_workdir(tmp_path / "work", raw)
    write_reviews(root / "data" / "raw" / "reviews")
    for stage, args in (
        ("prepare", ("--dataset", "reviews")),
        ("baseline", ("--dataset", "reviews")),
        ("train", ("--run", "bow")),
        ("evaluate", ("--run", "bow")),
    ):
        done = run_stage(root, stage, *args)
        assert done.returncode == 0, done.stderr[-3000:]

    scores = json.loads((root / "reports" / "metrics" / "bow.json").read_text())
    assert scores["baseline"]["name"] == "tfidf_logreg" and scores["test"]["accuracy"] >= 0.8
    data = load_prepared(root / "data" / "prepared" / "reviews")
    run_id = json.loads((root / "models" / "bow" / "run.json").read_text())["mlflow_run_id"]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    texts = data.test[0].tolist()  # raw strings, as the user's files hold them
    proba = model.predict(texts)
    assert list(proba.columns) == ["neg", "pos"]
    np.testing.assert_allclose(proba.to_numpy().sum(axis=1), 1.0, rtol=1e-5)
    confusion = pd.read_csv(root / "reports" / "plots" / "bow" / "eval" / "confusion.csv")
    assert proba.idxmax(axis=1).tolist() == confusion["predicted"].tolist()
    framed = model.predict(pd.DataFrame({"review": ["A wonderful, superb film!", "Dull. Awful."]}))
    assert framed.idxmax(axis=1).tolist() == ["pos", "neg"]
