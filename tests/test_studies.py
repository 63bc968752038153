"""Fit studies: their params, a tiny real study end to end, and per-layer gradient norms."""

from __future__ import annotations

import copy
import csv
import json

import pytest

from deepfit.config import ConfigError, load_params, parse_params, read_yaml
from helpers import ROOT


@pytest.fixture
def raw() -> dict:
    return copy.deepcopy(read_yaml(ROOT / "params.yaml"))


def error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_default_studies_resolve_variants_over_their_base():
    params = load_params(ROOT / "params.yaml")
    assert set(params.studies) == {"capacity", "regularisation", "activation", "sequence_length"}
    capacity = params.study("capacity")
    widths = [v.arch.units for v in capacity.variants.values()]
    assert widths == sorted(widths, key=lambda u: u[0]) and len(widths) >= 5
    assert all(
        v.arch.activation == capacity.base.arch.activation for v in capacity.variants.values()
    )
    reg = params.study("regularisation").variants
    assert reg["dropout"].arch.dropout == 0.5 and reg["none"].arch.dropout == 0.0
    assert reg["early_stopping"].train.early_stopping.enabled
    assert not reg["none"].train.early_stopping.enabled
    activations = {v.arch.activation for v in params.study("activation").variants.values()}
    assert {"relu", "sigmoid", "tanh"} <= activations
    assert params.fit.overfit_rise_skill == 0.002 and params.fit.smoothing == 5
    sequence = params.study("sequence_length")
    assert [v.model for v in sequence.variants.values()] == ["rnn", "lstm"]
    assert sequence.lengths == (16, 64, 256) and sequence.dataset == "python_docs"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.update(kind="size"), "studies.capacity.kind"),
        (lambda s: s.update(colour="red"), "studies.capacity.colour: unknown key"),
        (lambda s: s.update(train_size=0), "studies.capacity.train_size"),
        (lambda s: s["base"].update(model="gan"), "studies.capacity.base.model"),
        (lambda s: s["base"].update(dataset="nope"), "studies.capacity.base.dataset"),
        (
            lambda s: s["variants"].update(width_1={"unitz": [1]}),
            "studies.capacity.variants.width_1.unitz: unknown key",
        ),
        (
            lambda s: s["variants"].update(width_1={"dataset": "sunspots"}),
            "studies.capacity.variants.width_1: a variant keeps the base model and dataset",
        ),
        (
            lambda s: s.update(variants={"only": {}}),
            "studies.capacity.variants: declare at least two variants",
        ),
        (lambda s: s.update(variants=[1, 2]), "studies.capacity.variants: expected a mapping"),
    ],
)
def test_bad_study_params_name_the_key(raw, edit, expected):
    edit(raw["studies"]["capacity"])
    assert expected in error_of(raw)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.pop("lengths"), "studies.sequence_length.lengths: expected two or more"),
        (lambda s: s.update(lengths=[64]), "studies.sequence_length.lengths: expected two or more"),
        (lambda s: s.update(lengths=[64, 16]), "studies.sequence_length.lengths: expected two"),
        (lambda s: s.update(lengths=[1, 16]), "studies.sequence_length.lengths: expected two"),
        (lambda s: s.update(lengths="16"), "studies.sequence_length.lengths: expected two"),
        (
            lambda s: s["variants"].update(lstm={"model": "fnn"}),
            "studies.sequence_length.variants.lstm.model: a sequence_length study compares rnn,"
            " lstm (got 'fnn')",
        ),
        (
            lambda s: s["variants"].update(lstm={"dataset": "digits"}),
            "studies.sequence_length.variants.lstm: a variant keeps the base dataset",
        ),
        (
            lambda s: s["base"].update(model="fnn"),
            "studies.sequence_length.base: model 'fnn' needs image or sequence or text or vector",
        ),
        (
            lambda s: s["base"].update(dataset="sunspots"),
            "studies.sequence_length.base.dataset: a sequence_length study needs a character "
            "corpus (source: text), but 'sunspots' is source: sunspots",
        ),
    ],
)
def test_bad_sequence_length_study_params_name_the_key(raw, edit, expected):
    edit(raw["studies"]["sequence_length"])
    assert expected in error_of(raw)


def test_lengths_belong_to_sequence_length_studies_only(raw):
    raw["studies"]["capacity"]["lengths"] = [16, 64]
    assert "studies.capacity.lengths: only a sequence_length study has lengths" in error_of(raw)
    raw["studies"]["capacity"].pop("lengths")
    raw["studies"]["capacity"]["variants"]["width_1"]["model"] = "cnn"
    assert "width_1: a variant keeps the base model and dataset" in error_of(raw)


def test_corpus_windows_are_cut_again_at_any_length():
    import numpy as np

    from deepfit.data import DataError
    from deepfit.data.text import windows
    from deepfit.study.run import corpus_ids, through_time_windows

    ids = np.random.default_rng(0).integers(1, 50, size=1001).astype(np.uint8)
    cut = windows(ids, 64)  # as prepare stores a split: 15 windows, the tail dropped
    split = (cut["x"], cut["y"])
    assert np.array_equal(corpus_ids(split), ids[: 15 * 64 + 1])
    by_length = through_time_windows(split, (16, 200))
    assert by_length[16][0].shape == (60, 16) and by_length[200][0].shape == (4, 200)
    assert np.array_equal(by_length[16][1][:, :-1], by_length[16][0][:, 1:])
    with pytest.raises(DataError, match="lengths: 2000 characters is longer than the validation"):
        through_time_windows(split, (16, 2000))
    with pytest.raises(DataError, match="not consecutive"):
        corpus_ids((cut["x"][::-1], cut["y"][::-1]))


def test_bad_fit_thresholds_name_the_key(raw):
    raw["fit"]["overfit_gap"] = 0
    assert "fit.overfit_gap" in error_of(raw)
    raw["fit"] = {"overfit_gap": 0.1, "overfitt_rise": 0.1}
    assert "fit.overfitt_rise: unknown key" in error_of(raw)


def test_unknown_study_lists_declared_ones():
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(ConfigError, match="declared studies: capacity, regularisation"):
        params.study("dropout")


def test_gradient_norms_show_sigmoid_vanishing_where_relu_does_not():
    """A real 6-layer FNN: the sigmoid stack's first layer gets far less gradient than relu's."""
    import keras
    import numpy as np

    from deepfit.evaluate.diagnosis import gradient_summary
    from deepfit.models import get_spec
    from deepfit.models.base import DataSpec
    from deepfit.train.gradients import gradient_probe

    params = load_params(ROOT / "params.yaml")
    spec = DataSpec(input_shape=(8, 8, 1), kind="image", task="classification", n_outputs=10)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(128, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, size=128)
    first = {}
    for activation in ("relu", "sigmoid"):
        cfg = params.study("activation").variants[activation].arch
        keras.utils.set_random_seed(1)
        model = get_spec("fnn").build(cfg, spec)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        norms = gradient_probe(model, x, y)()
        assert list(norms) == [f"hidden_{i}" for i in range(1, 7)] + ["output"]
        assert all(np.isfinite(v) and v > 0 for v in norms.values())
        first[activation] = norms["hidden_1"]
        if activation == "sigmoid":
            assert "hidden_1" in gradient_summary([norms], params.fit)["vanished"]
    assert first["sigmoid"] * 10 < first["relu"]


def test_tiny_study_writes_table_figure_and_grouped_mlflow_runs(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from deepfit.data import load_prepared, prepare_dataset
    from deepfit.study.run import StudyOutputs, run_study

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    raw = read_yaml(ROOT / "params.yaml")
    study = raw["studies"]["regularisation"]
    study["train_size"] = 60
    study["base"]["units"] = [16]
    study["base"]["train"]["epochs"] = 3
    params = parse_params(raw)
    prepare_dataset("digits", params.dataset("digits"), 0, tmp_path / "prepared", tmp_path / "raw")
    data = load_prepared(tmp_path / "prepared")
    out = StudyOutputs.for_study("regularisation", tmp_path)
    points = run_study(params.study("regularisation"), params, data, out)

    assert [p["variant"] for p in points] == ["none", "dropout", "l2", "early_stopping"]
    assert all(p["verdict"] in {"underfit", "good", "overfit", "diverged"} for p in points)
    with out.csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["variant"] for r in rows] == ["none", "dropout", "l2", "early_stopping"]
    assert all(int(r["epochs"]) <= 3 and float(r["grad_first_median"]) > 0 for r in rows)
    table = out.table.read_text()
    assert "| variant | parameters |" in table and "**" in table
    assert out.figure.stat().st_size > 10_000
    saved = sorted(p.relative_to(out.runs_dir).as_posix() for p in out.runs_dir.rglob("*.json"))
    assert saved == sorted(
        f"{v}/{f}"
        for v in ("none", "dropout", "l2", "early_stopping")
        for f in ("gradients.json", "history.json")
    )

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("deepfit").experiment_id],
        filter_string="tags.`deepfit.study` = 'regularisation'",
    )
    parent = [r for r in runs if r.info.run_name == "study:regularisation"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parent) == 1 and len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    child = children[0]
    assert child.data.tags["deepfit.fit.verdict"] in {"underfit", "good", "overfit", "diverged"}
    assert "fit.skill_gap" in child.data.metrics and "grad_norm.hidden_1" in child.data.metrics
    history = client.get_metric_history(child.info.run_id, "grad_norm.hidden_1")
    assert [m.step for m in history] == list(range(1, len(history) + 1))
    artifacts = {a.path for a in client.list_artifacts(parent[0].info.run_id, "study")}
    assert artifacts == {
        "study/regularisation.md",
        "study/regularisation.csv",
        "study/regularisation.png",
    }


def test_train_size_larger_than_the_data_is_a_one_line_error(raw):
    from deepfit.data import DataError
    from deepfit.study.run import subsample

    class Data:
        train = (list(range(5)), list(range(5)))

    with pytest.raises(DataError, match="train_size: 10 is larger than the training split"):
        subsample(Data(), 10, 0)


def test_tiny_sequence_length_study_measures_the_reach_of_each_model(tmp_path, monkeypatch):
    """A real sequence_length study on the corpus' first 20,000 characters: both recurrent
    models trained, the gradient's reach measured at each window length, tracked in MLflow."""
    from mlflow.tracking import MlflowClient

    from deepfit.data import DataError, load_prepared, prepare_dataset
    from deepfit.study.run import StudyOutputs, run_study

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    raw = read_yaml(ROOT / "params.yaml")
    raw["datasets"]["python_docs"]["max_characters"] = 20_000
    study = raw["studies"]["sequence_length"]
    study.update(lengths=[8, 64], train_size=2_000)
    study["base"].update(embedding=8, units=[8])
    study["base"]["train"]["epochs"] = 1
    params = parse_params(raw)
    prepare_dataset(
        "python_docs", params.dataset("python_docs"), 0, tmp_path / "prepared", tmp_path / "raw"
    )
    data = load_prepared(tmp_path / "prepared")
    out = StudyOutputs.for_study("sequence_length", tmp_path)
    points = run_study(params.study("sequence_length"), params, data, out)

    assert [(p["variant"], p["model"]) for p in points] == [("rnn", "rnn"), ("lstm", "lstm")]
    for p in points:
        assert 0 <= p["reach_64"] < p["reach_8"] <= 1  # less gradient reaches further back
    with out.csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["reach_64"]) for r in rows] == [p["reach_64"] for p in points]
    table = out.table.read_text()
    assert "| variant | model | parameters |" in table and "| reach, 64 chars |" in table
    assert out.figure.stat().st_size > 10_000
    norms = json.loads((out.runs_dir / "rnn" / "gradients_through_time.json").read_text())
    assert sorted(norms) == ["64", "8"] and len(norms["64"]) == 64

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("deepfit").experiment_id],
        filter_string="tags.`deepfit.study` = 'sequence_length'",
    )
    children = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert sorted(children) == ["sequence_length/lstm", "sequence_length/rnn"]
    lstm = children["sequence_length/lstm"]
    assert lstm.data.params["model"] == "lstm"
    assert lstm.data.metrics["gradient_reach.64"] == points[1]["reach_64"]

    study["train_size"] = 10**6
    with pytest.raises(DataError, match=r"studies\.sequence_length\.train_size: 1000000 is"):
        run_study(parse_params(raw).study("sequence_length"), params, data, out)
