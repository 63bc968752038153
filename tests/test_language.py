"""Language: the text and translation sources, the n-gram baselines, the language-model and
translation metrics, bad inputs through the real stages, and the shared pipeline's language runs
(slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepfit.config import ConfigError, parse_params
from deepfit.data.text import UNKNOWN_ID, split_blocks, windows
from deepfit.data.translation import english, french
from deepfit.data.words import detokenize, ids_to_text, tokens
from deepfit.evaluate import baselines, metrics, ngram
from helpers import error_line, make_workdir, run_stage, snapshot, tiny_params

CORPUS = "the cat sat on the mat. the dog sat on the log. " * 40


def text_params(**dataset: object) -> dict:
    """The tiny params with one text dataset `corpus` (a file under data/raw/) and no runs."""
    raw = tiny_params()
    raw["datasets"]["corpus"] = {"source": "text", "path": "corpus.txt", **dataset}
    return raw


def text_workdir(tmp_path: Path, content: bytes, **dataset: object) -> Path:
    root = make_workdir(tmp_path / "work", text_params(**dataset))
    (root / "data" / "raw" / "corpus.txt").write_bytes(content)
    return root


# --- source: text ----------------------------------------------------------------------------


def test_blocks_are_in_order_and_windows_never_cross_them() -> None:
    blocks = split_blocks("abcdefghij" * 10, 0.1, 0.2)
    assert "".join(blocks.values()) == "abcdefghij" * 10
    assert [len(b) for b in blocks.values()] == [70, 10, 20]
    ids = np.arange(11)
    found = windows(ids, 5)
    np.testing.assert_array_equal(found["x"], [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(found["y"], [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])


def test_prepare_text_vocab_from_training_block_with_unknown_token(tmp_path: Path) -> None:
    content = (CORPUS + "QQQQ" * 40).encode()  # Q appears only in the last (test) block
    root = text_workdir(tmp_path, content, sequence_length=16)
    done = run_stage(root, "prepare", "--dataset", "corpus")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((root / "data/prepared/corpus/manifest.json").read_text())
    assert manifest["kind"] == "tokens" and manifest["input_shape"] == [16]
    assert "Q" not in manifest["class_names"] and manifest["details"]["unknown_characters"]["test"]
    with np.load(root / "data/prepared/corpus/test.npz") as test:
        assert (test["x"] == UNKNOWN_ID).any() and test["x"].dtype == np.uint8


@pytest.mark.parametrize(
    ("content", "dataset", "message"),
    [
        (
            b"caf\xc3\xa9 ok \xff bad",
            {},
            "{file}: not UTF-8 (byte 0xff at byte offset 9 cannot be decoded: invalid start byte)",
        ),
        (b"", {}, "{file}: the file is empty; a text corpus needs characters"),
        (
            b"short text",
            {"sequence_length": 4},
            "datasets.corpus.sequence_length: 4 needs a corpus of at least 12 characters"
            " (3 windows), {file} has 10",
        ),
    ],
)
def test_bad_text_is_one_line_and_writes_nothing(
    tmp_path: Path, content: bytes, dataset: dict, message: str
) -> None:
    root = text_workdir(tmp_path, content, **dataset)
    before = snapshot(root)
    done = run_stage(root, "prepare", "--dataset", "corpus")
    assert done.returncode == 2
    file = Path("data/raw/corpus.txt")
    assert error_line(done, "prepare@corpus") == (
        f"deepfit prepare@corpus: error: {message.format(file=file)}"
    )
    assert snapshot(root) == before


def test_sequence_length_zero_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"datasets\.corpus\.sequence_length: Input should be"):
        parse_params(text_params(sequence_length=0))


def test_text_needs_path_or_corpus_not_both() -> None:
    with pytest.raises(ConfigError, match="give either path"):
        parse_params(text_params(corpus="python_docs"))


# --- n-gram baselines ------------------------------------------------------------------------


def char_windows(text: str, length: int) -> tuple[np.ndarray, np.ndarray, int]:
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) + 1 for c in text], dtype=np.uint8)
    found = windows(ids, length)
    return found["x"], found["y"], len(vocab) + 1


def test_ngram_beats_unigram_and_its_order_is_chosen_on_validation() -> None:
    x, y, vocab = char_windows(CORPUS, 12)
    third = len(x) // 3
    train, val, test = (x[:third], y[:third]), (x[third:-5], y[third:-5]), (x[-5:], y[-5:])
    uni = baselines.unigram(train, val, test, vocab)
    found = baselines.ngram(train, val, test, vocab, {"order": [1, 2, 4], "discount": [0.75]})
    assert found["bpc"] < uni["bpc"] and found["params"]["order"] == 4
    assert found["predictions"].shape == test[1].shape
    assert np.isclose(found["bpc"], found["predictions"].mean(), atol=1e-6)


def test_unigram_bits_are_add_one_frequencies() -> None:
    bits = ngram.unigram_bits(np.array([[1, 1, 2]]), np.array([[1, 0]]), vocab=3)
    np.testing.assert_allclose(bits, [[-np.log2(3 / 6), -np.log2(1 / 6)]])


def test_target_bits_and_language_metrics() -> None:
    proba = np.array([[[0.5, 0.5], [0.25, 0.75]]])
    bits = metrics.target_bits(np.array([[0, 1]]), proba)
    np.testing.assert_allclose(bits, [[1.0, -np.log2(0.75)]])
    found = metrics.language_model_metrics(np.array([1.0, 3.0]), np.array([True, False]))
    assert found == {"bpc": 2.0, "perplexity": 4.0, "loss": 2 * np.log(2), "accuracy": 0.5}


# --- toy translation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "en", "fr"),
    [
        (21, "twenty-one", "vingt et un"),
        (71, "seventy-one", "soixante et onze"),
        (80, "eighty", "quatre-vingts"),
        (97, "ninety-seven", "quatre-vingt-dix-sept"),
        (200, "two hundred", "deux cents"),
        (201, "two hundred one", "deux cent un"),
        (1080, "one thousand eighty", "mille quatre-vingts"),
        (2300, "two thousand three hundred", "deux mille trois cents"),
        (3000, "three thousand", "trois mille"),  # not "troi": only vingts and cents lose an s
        (23000, "twenty-three thousand", "vingt-trois mille"),
        (80000, "eighty thousand", "quatre-vingt mille"),
        (200000, "two hundred thousand", "deux cent mille"),
    ],
)
def test_number_words(number: int, en: str, fr: str) -> None:
    assert (english(number), french(number)) == (en, fr)
    assert detokenize(tokens(fr)) == fr


@pytest.mark.parametrize(
    ("max_number", "sizes"),
    [(9999, (300, 50, 50)), (9999, (40, 20, 20)), (60, (30, 15, 16))],
)
def test_translation_splits_are_disjoint_and_train_on_the_numbers_below_100(
    max_number: int, sizes: tuple[int, int, int]
) -> None:
    """Every number below 100 (as many as train_size holds) is trained on; the splits are
    disjoint and as large as declared, and the same seed draws the same corpus."""
    from deepfit.data.config import TranslationConfig
    from deepfit.data.translation import build_translation

    train, val, test = sizes
    cfg = TranslationConfig(
        source="translation", max_number=max_number, train_size=train, val_size=val, test_size=test
    )
    built = build_translation(cfg, seed=7, raw_dir=Path("."), where="datasets.t")
    drawn = {split: set(built.splits[split]["number"].tolist()) for split in built.splits}
    assert [len(drawn[s]) for s in ("train", "val", "test")] == [train, val, test]
    assert not drawn["train"] & (drawn["val"] | drawn["test"]) and not drawn["val"] & drawn["test"]
    below = set(range(min(100, max_number + 1)))
    assert len(drawn["train"] & below) == min(train, len(below))
    again = build_translation(cfg, seed=7, raw_dir=Path("."), where="datasets.t")
    assert again.splits["test"]["number"].tolist() == built.splits["test"]["number"].tolist()


def test_ids_to_text_stops_at_the_end_token() -> None:
    vocab = ["<pad>", "<start>", "<end>", "<unk>", "-", "dix", "sept"]
    assert ids_to_text(np.array([[5, 4, 6, 2, 5]]), vocab) == ["dix-sept"]


def test_translation_metrics_and_edit_distance() -> None:
    assert metrics.edit_distance("kitten", "sitting") == 3
    found = metrics.translation_metrics(["abcd", "ef"], ["abcd", "eg"])
    assert found == {"exact_match": 0.5, "cer": 1 / 6}


def test_seq2seq_on_a_dataset_that_is_not_a_translation_is_one_line() -> None:
    raw = text_params()
    raw["runs"] = {"s2s": {"model": "seq2seq", "dataset": "corpus"}}
    raw["tuning"] = {}  # its base run is gone
    with pytest.raises(ConfigError) as error:
        parse_params(raw)
    assert str(error.value) == (
        "params.yaml: runs.s2s: model 'seq2seq' needs translation data, "
        "but dataset 'corpus' is tokens data"
    )


# --- the shared pipeline's language runs (conftest's `pipeline`) ------------------------------


@pytest.mark.slow
def test_char_language_model_trains_evaluates_and_writes_samples(pipeline) -> None:
    root, _ = pipeline
    samples = (root / "reports/samples/lstm_text.txt").read_text()
    assert "--- temperature 0.5 ---" in samples and "--- temperature 1 ---" in samples
    scores = json.loads((root / "reports/metrics/lstm_text.json").read_text())
    assert scores["baseline"]["name"] == "ngram" and scores["test"]["bpc"] > 0
    assert (root / "reports/figures/lstm_text/training/samples_epoch_0001.txt").is_file()
    evidence = json.loads((root / "reports/evidence/lstm_text.json").read_text())
    assert 0 <= evidence["test"]["gradient_reach"] <= 10
    assert (root / "reports/plots/lstm_text/eval/gradients_through_time.csv").is_file()


@pytest.mark.slow
def test_seq2seq_trains_and_evaluates_on_a_tiny_translation_task(pipeline) -> None:
    root, _ = pipeline
    evidence = json.loads((root / "reports/evidence/seq2seq.json").read_text())
    assert set(evidence["test"]) == {"exact_match", "cer"}
    assert set(evidence["baselines"]) == {"length_mode", "copy"}
    samples = (root / "reports/samples/seq2seq.txt").read_text()
    assert samples.startswith("seq2seq: not a language model")


def test_max_characters_keeps_the_start_of_the_corpus(tmp_path: Path) -> None:
    root = text_workdir(tmp_path, CORPUS.encode(), sequence_length=8, max_characters=400)
    done = run_stage(root, "prepare", "--dataset", "corpus")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((root / "data/prepared/corpus/manifest.json").read_text())
    assert sum(manifest["details"]["characters"].values()) == 400


@pytest.mark.slow
def test_logged_language_model_takes_raw_text_and_gives_the_next_character(pipeline) -> None:
    """The MLflow model of `lstm_text` reads strings of any length; for each, its probabilities
    are the Keras model's at the text's last character (ids from the manifest's vocabulary)."""
    import keras
    import mlflow
    import numpy as np

    root, _ = pipeline
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["deepfit"], filter_string="run_name = 'lstm_text'")
    model = mlflow.pyfunc.load_model(f"runs:/{found.iloc[0].run_id}/model")
    manifest = json.loads((root / "data/prepared/python_docs/manifest.json").read_text())
    vocab = manifest["class_names"]
    prompts = ["The ", "def f(x):\n    return", "\u263a"]  # the last: not in the vocabulary
    assert "\u263a" not in vocab
    out = model.predict(prompts)
    assert list(out.columns) == vocab and len(out) == 3
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    network = keras.saving.load_model(root / "models/lstm_text/model.keras")
    for row, prompt in enumerate(prompts):
        ids = np.array([[vocab.index(c) if c in vocab else 0 for c in prompt]], dtype=np.int32)
        alone = network.predict(ids, verbose=0)[0, -1]
        # batched with longer texts (padded after it) against alone: float32 rounding only
        np.testing.assert_allclose(out.iloc[row].to_numpy(), alone, rtol=1e-5, atol=1e-7)
    with pytest.raises(Exception, match="an empty text"):
        model.predict(["The ", ""])
    with pytest.raises(Exception, match="row 1: expected a text, got a missing cell"):
        model.predict(["The ", None])


# Loads and runs the logged translation model where deepfit cannot be imported.
_TRANSLATE = """
import json, sys
sys.modules["deepfit"] = None
import mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
answers = {"translations": model.predict(json.loads(sys.argv[2]))["translation"].tolist()}
for bad in ("one two three four five six seven eight nine ten", "", None):
    try:
        model.predict([bad])
    except Exception as error:
        answers.setdefault("errors", []).append(str(error))
print(json.dumps(answers))
"""


@pytest.mark.slow
def test_logged_translation_model_takes_raw_sentences_and_gives_translations(pipeline) -> None:
    """The MLflow model of `seq2seq` reads English sentences as written and returns the French
    that evaluation decoded for each test item. It loads in a process where deepfit cannot be
    imported (its Keras class and word lists travel in the model) and refuses sentences it
    cannot read."""
    import subprocess
    import sys

    import mlflow
    import pandas as pd

    from helpers import stage_env

    root, _ = pipeline
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    found = mlflow.search_runs(experiment_names=["deepfit"], filter_string="run_name = 'seq2seq'")
    scored = pd.read_csv(
        root / "reports/plots/seq2seq/eval/translations.csv", keep_default_na=False
    )
    sources = json.dumps(scored["source"].tolist())
    model = f"runs:/{found.iloc[0].run_id}/model"
    done = subprocess.run(
        [sys.executable, "-c", _TRANSLATE, model, sources],
        cwd=root, env=stage_env(MLFLOW_TRACKING_URI=uri), capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert answers["translations"] == scored["predicted"].tolist()
    assert len(answers["errors"]) == 3
    assert all("the model reads 1 to" in error for error in answers["errors"][:2])
    assert "row 0: expected a text, got a missing cell" in answers["errors"][2]
