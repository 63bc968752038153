"""Training helpers: optimizers from params, curve tables, best epoch; a tiny real train_run."""

from __future__ import annotations

import json

import pytest

from deepfit.config import OptimizerConfig
from deepfit.train.curves import curve_tables
from deepfit.train.loop import best_epoch, make_optimizer
from helpers import ROOT, build_arch, compile_for


@pytest.mark.parametrize(
    ("cfg", "cls", "checks"),
    [
        (dict(name="sgd", learning_rate=0.1), "SGD", {"momentum": 0.0, "nesterov": False}),
        (
            dict(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True),
            "SGD",
            {"momentum": 0.9, "nesterov": True},
        ),
        (dict(name="rmsprop", learning_rate=0.01, momentum=0.5), "RMSprop", {"momentum": 0.5}),
        (dict(name="adam", learning_rate=2e-4, beta_1=0.5), "Adam", {"beta_1": 0.5}),
        (dict(name="adamw", weight_decay=0.01), "AdamW", {"weight_decay": 0.01}),
    ],
)
def test_make_optimizer_follows_params(cfg, cls, checks):
    optimizer = make_optimizer(OptimizerConfig(**cfg), "constant", total_steps=10)
    assert type(optimizer).__name__ == cls
    config = optimizer.get_config()
    assert config["learning_rate"] == pytest.approx(cfg.get("learning_rate", 1e-3))
    for key, value in checks.items():
        assert config[key] == pytest.approx(value)


def test_cosine_schedule_decays_over_all_steps():
    optimizer = make_optimizer(OptimizerConfig(learning_rate=0.1), "cosine", total_steps=100)
    schedule = optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)


def test_curve_tables_pair_train_and_validation():
    history = {
        "loss": [1.0, 0.5],
        "val_loss": [1.1, 0.7],
        "accuracy": [0.5, 0.75],
        "val_accuracy": [0.4, 0.6],
        "learning_rate": [0.1, 0.1],
    }
    tables = curve_tables(history)
    assert set(tables) == {"loss", "accuracy"}
    assert tables["loss"] == "epoch,train,val\n1,1.0,1.1\n2,0.5,0.7\n"


def test_best_epoch_is_lowest_validation_loss_or_last_for_gan():
    history = {"loss": [3, 2, 1, 0.5], "val_loss": [3, 1, 2, 1.5]}
    assert best_epoch(history, generative=False) == 2
    assert best_epoch({"d_loss": [1, 2, 3], "val_d_loss": [1, 1, 1]}, generative=True) == 3


def test_train_run_writes_outputs_and_tracks_epochs(tmp_path, monkeypatch):
    """A real two-epoch FNN on a tiny prepared digits split, logged to a sqlite store."""
    from mlflow.tracking import MlflowClient

    from deepfit.config import parse_params, read_yaml
    from deepfit.data import load_prepared, prepare_dataset
    from deepfit.train.run import TrainOutputs, train_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    raw = read_yaml(ROOT / "params.yaml")
    raw["train"]["epochs"] = 2
    raw["runs"]["fnn"]["units"] = [16]
    params = parse_params(raw)
    prepare_dataset("digits", params.dataset("digits"), 0, tmp_path / "prepared", tmp_path / "raw")
    data = load_prepared(tmp_path / "prepared")
    summary = train_run(params.run("fnn"), params, data, TrainOutputs.for_run("fnn", tmp_path))

    model_dir = tmp_path / "models" / "fnn"
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "gradients.json",
        "history.json",
        "model.keras",
        "run.json",
    ]
    from deepfit.outputs import read_gradients

    records = read_gradients(model_dir / "gradients.json")
    # the default fnn has batch norm; the layers with weights, in forward order
    assert len(records) == 2 and list(records[0]) == ["hidden_1", "hidden_1_bn", "output"]
    norms = tmp_path / "reports/plots/fnn/gradients/norms.csv"
    assert norms.read_text().splitlines()[:2][0] == "epoch,layer,norm"
    assert len(norms.read_text().splitlines()) == 1 + 2 * 3  # header + 2 epochs x 3 layers
    assert json.loads((model_dir / "run.json").read_text())["epochs"] == 2
    curves = tmp_path / "reports" / "plots" / "fnn" / "curves"
    assert sorted(p.name for p in curves.iterdir()) == ["accuracy.csv", "loss.csv"]
    assert (tmp_path / "reports/figures/fnn/training/learning_curves.png").exists()
    leftovers = [p for p in tmp_path.rglob(".*") if p.name.startswith((".fnn", ".curves"))]
    assert not leftovers

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
    # the training rows scored as validation is: in the history, MLflow and the logs' order
    history = json.loads((model_dir / "history.json").read_text())
    assert len(history["train_eval_loss"]) == len(history["train_eval_accuracy"]) == 2
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_eval_loss")] == [1, 2]
    assert run.data.params["arch.units"] == "16"


def test_training_eval_scores_rows_as_validation_is_and_never_changes_training():
    """TrainingEval's values are ``evaluate`` on its rows (inference mode), not Keras' running
    training loss; with it the same seeded fit gives the same training curve to the bit."""
    import numpy as np

    from deepfit.models.base import DataSpec
    from deepfit.train.callbacks import TrainingEval
    from deepfit.train.loop import eval_rows, fixed_rows

    spec = DataSpec(input_shape=(8, 8, 1), kind="image", task="classification", n_outputs=10)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(300, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, size=300)
    sample = fixed_rows((x, y), 64, seed=5)
    assert len(sample[0]) == 64  # drawn once: the same rows for the same seed
    np.testing.assert_array_equal(sample[0], fixed_rows((x, y), 64, seed=5)[0])
    histories = []
    for scored in (False, True):
        model = build_arch("fnn", spec, seed=3, units=[32], batch_norm=True, dropout=0.5)
        compile_for(model, spec)
        rows = eval_rows(*sample, batch_size=32)
        callbacks = [TrainingEval(rows)] if scored else []
        fitted = model.fit(
            x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=callbacks
        )
        histories.append(fitted.history)
    plain, scored = histories
    assert scored["loss"] == plain["loss"]
    assert sorted(k for k in scored if k.startswith("train_eval_")) == ["train_eval_loss"]
    after = model.evaluate(rows, verbose=0, return_dict=True)["loss"]
    assert scored["train_eval_loss"][-1] == pytest.approx(after, rel=1e-6)
    assert abs(scored["train_eval_loss"][-1] - scored["loss"][-1]) > 1e-3  # another measure


def test_gradient_records_keep_forward_layer_order(tmp_path):
    """hidden_10 sorts before hidden_2 as text; files and summaries must keep model order."""
    from deepfit.outputs import read_gradients, write_gradients
    from deepfit.train.callbacks import GradientNorms
    from deepfit.train.curves import gradient_table

    layers = [f"hidden_{i}" for i in range(1, 12)] + ["output"]

    def probe():
        return {name: float(i) for i, name in enumerate(layers)}

    probe.layers = layers
    callback = GradientNorms(probe)
    callback.on_epoch_end(0)
    callback.records.append(dict(sorted(probe().items())))  # as a resumed backup may hold it
    records = callback.ordered_records()
    assert [list(r) for r in records] == [layers, layers]
    write_gradients(tmp_path / "g.json", records)
    assert [list(r) for r in read_gradients(tmp_path / "g.json")] == [layers, layers]
    assert gradient_table(records).splitlines()[1:3] == ["1,hidden_1,0.0", "1,hidden_2,1.0"]
    assert read_gradients(tmp_path / "missing.json") == []


@pytest.mark.parametrize("name", ["fnn", "gan"])
def test_gradient_norms_warm_the_probe_up_in_a_thread_and_measure_the_same(name):
    """GradientNorms builds and runs its probe once in a thread while the first epoch trains
    (the result unused); the records are those of a probe built in line, to the bit, and the
    training is the same."""
    import threading

    import keras
    import numpy as np

    from deepfit.models.base import DataSpec
    from deepfit.train.callbacks import GradientNorms
    from deepfit.train.gradients import gan_gradient_probe, gradient_probe

    spec = DataSpec(input_shape=(8, 8, 1), kind="image", task="classification", n_outputs=10)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, size=64)
    fits, warmed_up_in = [], []
    for warm in (False, True):
        keras.utils.set_random_seed(1)
        model = build_arch(name, spec, seed=3, **({"dropout": 0.3} if name == "fnn" else {}))
        compile_for(model, spec)
        if name == "gan":
            probe = gan_gradient_probe(model, x, seed=5, chunk=32)
        else:
            probe = gradient_probe(model, x, y, chunk=32)
        if warm:
            build = probe.warm_up

            def warm_up(build=build):
                warmed_up_in.append(threading.current_thread().name)
                build()

            probe.warm_up = warm_up
        else:
            del probe.warm_up
        callback = GradientNorms(probe)
        inputs = (x,) if name == "gan" else (x, y)
        model.fit(*inputs, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[callback])
        fits.append((callback.records, [keras.ops.convert_to_numpy(w) for w in model.weights]))
    (in_line, weights), (warmed, warmed_weights) = fits
    assert warmed_up_in == ["gradient-probe-warm-up"]
    assert len(warmed) == 2
    assert warmed == in_line
    for a, b in zip(weights, warmed_weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_probe_that_fails_to_warm_up_fails_the_fit():
    """An error in the warm-up thread is raised in training at the first epoch's end."""
    import numpy as np

    from deepfit.models.base import DataSpec
    from deepfit.train.callbacks import GradientNorms

    def probe():
        return {"dense": 1.0}

    def warm_up():
        raise ValueError("the probe's graph cannot be built")

    probe.warm_up = warm_up
    spec = DataSpec(input_shape=(8, 8, 1), kind="image", task="classification", n_outputs=10)
    model = build_arch("fnn", spec, seed=3, units=[8])
    compile_for(model, spec)
    x = np.zeros((32, 8, 8, 1), "float32")
    callback = GradientNorms(probe)
    with pytest.raises(ValueError, match="cannot be built"):
        model.fit(x, np.zeros(32, "int64"), epochs=2, verbose=0, callbacks=[callback])
    assert callback.records == []


def test_gradient_probe_in_chunks_measures_the_whole_sample():
    """The probe feeds its sample a training batch at a time (bounded memory); the norms are
    those of the gradient of the mean loss over the whole sample, uneven last chunk included."""
    import numpy as np

    from deepfit.models.base import DataSpec
    from deepfit.train.gradients import gan_gradient_probe, gradient_probe

    spec = DataSpec(input_shape=(8, 8, 1), kind="image", task="classification", n_outputs=10)
    fnn = build_arch("fnn", spec, seed=3, units=[32, 16], batch_norm=True, dropout=0.3)
    gan = build_arch("gan", spec, seed=3, latent_dim=8)
    for model in (fnn, gan):
        compile_for(model, spec)
    chunk = 32  # 100 samples: three chunks of 32 and one of 4
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 16, size=(100, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, size=100)
    for whole, chunked in (
        (gradient_probe(fnn, x, y), gradient_probe(fnn, x, y, chunk)),
        (gan_gradient_probe(gan, x, 5), gan_gradient_probe(gan, x, 5, chunk)),
    ):
        expected, got = whole(), chunked()
        assert list(got) == list(expected)
        assert all(v > 0 for v in expected.values())
        np.testing.assert_allclose(list(got.values()), list(expected.values()), rtol=1e-5)
