"""params.yaml schema: the real file validates; each kind of mistake is one line naming the key."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from deepfit.config import ConfigError, load_params, parse_params, read_yaml
from helpers import ROOT


@pytest.fixture
def raw() -> dict:
    return copy.deepcopy(read_yaml(ROOT / "params.yaml"))


def error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_real_params_validate_and_resolve_defaults():
    params = load_params(ROOT / "params.yaml")
    assert set(params.runs) == {
        "fnn",
        "cnn",
        "rnn",
        "lstm",
        "rnn_adding",
        "lstm_adding",
        "rnn_text",
        "lstm_text",
        "seq2seq",
        "gan",
    }
    gan = params.run("gan")
    # the run's own train block overrides single keys of the shared defaults
    assert gan.train.epochs == 40
    assert gan.train.optimizer.beta_1 == 0.5
    assert gan.train.early_stopping.enabled is False
    assert gan.train.batch_size == params.train.batch_size
    assert params.run("fnn").train == params.train  # no train block: the shared defaults
    cnn = params.run("cnn").train
    assert cnn.epochs == 60
    assert cnn.model_copy(update={"epochs": params.train.epochs}) == params.train


def test_list_activation_error_points_at_the_bad_item(raw):
    raw["runs"]["cnn"]["activation"] = ["relu", "tanhh", "relu"]
    message = error_of(raw)
    assert message.startswith("params.yaml: runs.cnn.activation.1: Input should be 'relu'")
    assert "more problem" not in message and "literal[" not in message


def test_yaml_1_2_floats(tmp_path, raw):
    text = (
        (ROOT / "params.yaml").read_text().replace("learning_rate: 1.0e-3", "learning_rate: 1e-3")
    )
    assert "learning_rate: 1e-3" in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path).train.optimizer.learning_rate == pytest.approx(0.001)


def test_unknown_top_level_key(raw):
    raw["trian"] = {}
    assert error_of(raw) == "params.yaml: trian: unknown key; allowed keys: " + ", ".join(
        [
            "seeds",
            "datasets",
            "train",
            "runs",
            "scorer",
            "mlflow",
            "fit",
            "baselines",
            "studies",
            "tuning",
        ]
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda b: b["classification"]["svm"].update(C=[]),
            "baselines.classification.svm.C: expected a non-empty list of values to try (got [])",
        ),
        (
            lambda b: b["classification"].update(forest={}),
            "baselines.classification.forest: unknown baseline; allowed: logreg, svm, knn, gbt",
        ),
        (
            lambda b: b["forecast"]["ar"].update(order=[2]),
            "baselines.forecast.ar.order: unknown key; allowed keys: p",
        ),
        (
            lambda b: b.update(ranking={"x": {}}),
            "baselines.ranking: unknown family; allowed: classification, text_classification, "
            "forecast, regression, generation, language_model, translation",
        ),
        (
            lambda b: b["forecast"]["persistence"].update(window=[3]),
            "baselines.forecast.persistence.window: unknown key; allowed keys: none (this "
            "baseline has no hyper-parameters)",
        ),
    ],
)
def test_bad_baseline_grids_name_the_key(raw, change, message):
    change(raw["baselines"])
    assert error_of(raw) == f"params.yaml: {message}"


def test_mistyped_run_key_lists_allowed(raw):
    raw["runs"]["cnn"]["activaton"] = "tanh"
    message = error_of(raw)
    assert message.startswith("params.yaml: runs.cnn.activaton: unknown key; allowed keys: model")
    assert "activation" in message


def test_mistyped_nested_train_key(raw):
    raw["train"]["optimizer"]["lr"] = 0.1
    message = error_of(raw)
    assert message.startswith("params.yaml: train.optimizer.lr: unknown key")
    assert "learning_rate" in message


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("runs", "cnn", "model"), "transformer", "runs.cnn.model: unknown model 'transformer'"),
        (("runs", "cnn", "activation"), "tanhh", "runs.cnn.activation"),
        (("train", "optimizer", "name"), "adagradd", "train.optimizer.name"),
        (("train", "epochs"), "ten", "train.epochs"),
        (("train", "epochs"), "10", "train.epochs"),
        (("train", "epochs"), 0, "train.epochs"),
        (("train", "batch_size"), [64], "train.batch_size"),
        (("train", "optimizer", "learning_rate"), -0.1, "train.optimizer.learning_rate"),
        (("runs", "fnn", "dropout"), 1.0, "runs.fnn.dropout"),
        (("runs", "fnn", "dataset"), "mnist", "runs.fnn.dataset: 'mnist' is not declared"),
        (("runs", "cnn", "dataset"), "sunspots", "runs.cnn: model 'cnn' needs image data"),
        (("runs", "cnn"), "tanh", "runs.cnn: expected a mapping"),
        (("scorer", "dataset"), "nope", "scorer.dataset"),
    ],
)
def test_bad_values_name_the_key(raw, path, value, expected):
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert expected in error_of(raw)


def test_a_gan_draws_the_data_its_scorer_was_trained_on(raw):
    raw["datasets"]["pics"] = {"source": "images", "path": "pics", "image_size": [32, 32]}
    raw["runs"]["gan"]["dataset"] = "pics"
    assert "runs.gan.dataset: 'pics', but a gan run is scored by the classifier trained on " + (
        "scorer.dataset ('digits'); set scorer.dataset: pics"
    ) in error_of(raw)
    raw["scorer"]["dataset"] = "pics"
    assert parse_params(raw).runs["gan"].dataset == "pics"


def test_unknown_activation_lists_allowed(raw):
    raw["runs"]["cnn"]["activation"] = "tanhh"
    message = error_of(raw)
    assert "'relu'" in message and "'sigmoid'" in message and "tanhh" in message


def test_optimizer_options_must_fit_the_optimizer(raw):
    raw["train"]["optimizer"]["momentum"] = 0.9  # shared default optimizer is adam
    assert "momentum is used only by rmsprop, sgd" in error_of(raw)
    raw["train"]["optimizer"]["name"] = "sgd"
    raw["train"]["optimizer"]["learning_rate"] = 0.05
    params = parse_params(raw)
    assert params.train.optimizer.momentum == 0.9
    # a run naming another optimizer drops sgd's momentum but keeps the shared learning rate
    fnn = {**raw["runs"]["fnn"], "train": {"optimizer": {"name": "adam"}}}
    raw["runs"]["fnn"] = fnn
    optimizer = parse_params(raw).run("fnn").train.optimizer
    assert (optimizer.name, optimizer.momentum, optimizer.learning_rate) == ("adam", None, 0.05)
    gan_optimizer = params.run("gan").train.optimizer  # sets its own learning rate and beta_1
    assert (gan_optimizer.learning_rate, gan_optimizer.beta_1) == (2e-4, 0.5)


def test_run_override_of_same_optimizer_merges(raw):
    raw["runs"]["cnn"]["train"] = {"optimizer": {"learning_rate": 0.01}}
    optimizer = parse_params(raw).run("cnn").train.optimizer
    assert (optimizer.name, optimizer.learning_rate) == ("adam", 0.01)


def test_run_override_error_names_the_run(raw):
    raw["runs"]["gan"]["train"]["optimizer"]["momentum"] = 0.9  # momentum does not fit adam
    assert error_of(raw).startswith("params.yaml: runs.gan.train.optimizer: momentum is used only")


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seeds:\n  split: [1, 2\n")
    with pytest.raises(ConfigError, match=r"params.yaml: malformed YAML \(line \d+"):
        load_params(path)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "params.yaml")


def test_validation_never_imports_tensorflow_or_mlflow():
    code = (
        "import sys; from deepfit.config import load_params; load_params('params.yaml'); "
        "heavy = [m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_stage_bad_run_name_is_one_line_and_writes_nothing(tmp_path, stage):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    done = subprocess.run(
        [sys.executable, "-m", f"deepfit.stages.{stage}", "--run", "nope"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"deepfit {stage}@nope: error: runs.nope: no such run; declared runs: "
        "fnn, cnn, rnn, lstm, rnn_adding, lstm_adding, rnn_text, lstm_text, seq2seq, gan"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
