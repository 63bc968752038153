"""Training: optimizer from params, compile, fit with callbacks, and the run's training outputs.

``train_run`` is the one call the train stage makes. Keras and MLflow are imported inside
functions so that importing this module (for example in tests of helpers) stays cheap.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfit.config import OptimizerConfig, Params, RunConfig, TrainConfig
from deepfit.models import get_spec
from deepfit.outputs import atomic_dir, write_json

if TYPE_CHECKING:
    import keras
    import numpy as np
    import tensorflow as tf

    from deepfit.callbacks import EpochMetricsLogger, GradientNorms
    from deepfit.data import Prepared
    from deepfit.models.base import DataSpec

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
RUN_FILE = "run.json"
HISTORY_FILE = "history.json"
GRADIENTS_FILE = "gradients.json"


@dataclass(frozen=True)
class TrainOutputs:
    """Where one run's training writes: model folder, learning-curve and gradient data, figures."""

    model_dir: Path
    curves_dir: Path
    gradients_dir: Path
    figures_dir: Path

    @classmethod
    def for_run(cls, name: str, root: Path = Path()) -> TrainOutputs:
        return cls(
            model_dir=root / "models" / name,
            curves_dir=root / "reports" / "plots" / name / "curves",
            gradients_dir=root / "reports" / "plots" / name / "gradients",
            figures_dir=root / "reports" / "figures" / name / "training",
        )


def make_optimizer(cfg: OptimizerConfig, schedule: str, total_steps: int) -> keras.Optimizer:
    """Build the Keras optimizer named in params (sgd with momentum 0 is plain gradient descent)."""
    import keras

    learning_rate: Any = cfg.learning_rate
    if schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, total_steps)
    common: dict[str, Any] = {"learning_rate": learning_rate}
    if cfg.weight_decay is not None:
        common["weight_decay"] = cfg.weight_decay
    if cfg.clipnorm is not None:
        common["clipnorm"] = cfg.clipnorm
    if cfg.name == "sgd":
        return keras.optimizers.SGD(momentum=cfg.momentum or 0.0, nesterov=cfg.nesterov, **common)
    if cfg.name == "rmsprop":
        return keras.optimizers.RMSprop(momentum=cfg.momentum or 0.0, **common)
    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "nadam": keras.optimizers.Nadam,
        "adamax": keras.optimizers.Adamax,
        "adagrad": keras.optimizers.Adagrad,
    }
    if cfg.beta_1 is not None:
        common["beta_1"] = cfg.beta_1
    return classes[cfg.name](**common)


def compile_model(
    model: keras.Model, spec: DataSpec, cfg: TrainConfig, steps_per_epoch: int, generative: bool
) -> None:
    """Compile with the params' optimizer; loss and metrics follow the task.

    ``train.steps_per_execution`` batches run per compiled call: the same updates in the same
    order (identical results), with less Python and dispatch overhead per step.
    """
    total = max(1, steps_per_epoch * cfg.epochs)
    execution = {"steps_per_execution": cfg.steps_per_execution}
    if generative:
        model.compile(
            d_optimizer=make_optimizer(cfg.optimizer, cfg.schedule, total),
            g_optimizer=make_optimizer(cfg.optimizer, cfg.schedule, total),
            **execution,
        )
    elif spec.task == "classification":
        model.compile(
            optimizer=make_optimizer(cfg.optimizer, cfg.schedule, total),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            **execution,
        )
    else:
        model.compile(
            optimizer=make_optimizer(cfg.optimizer, cfg.schedule, total),
            loss="mse",
            metrics=["mae"],
            **execution,
        )


def standard_callbacks(cfg: TrainConfig, generative: bool) -> list[keras.callbacks.Callback]:
    """Built-in callbacks: keep the best validation epoch, LR schedule on plateau.

    (Divergence is caught by ``deepfit.recovery.DivergenceGuard`` at the end of each epoch;
    Keras' ``TerminateOnNaN`` checks after every batch, which costs every step a wait.)
    """
    import keras

    callbacks: list[keras.callbacks.Callback] = []
    if generative:
        return callbacks  # a GAN's validation losses do not rank its samples; keep the last epoch
    # Always restore the best validation epoch (the "best checkpoint", kept in memory and saved
    # once); with early stopping off, patience beyond the epoch count means it never stops.
    patience = cfg.early_stopping.patience if cfg.early_stopping.enabled else cfg.epochs + 1
    callbacks.append(
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=patience,
            min_delta=cfg.early_stopping.min_delta,
            restore_best_weights=True,
            verbose=1,
        )
    )
    if cfg.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", verbose=1))
    return callbacks


def input_pipeline(
    data: Prepared, batch_size: int, seed: int, generative: bool
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Training batches reshuffled every epoch (seeded) and fixed validation batches.

    ``fit`` on NumPy arrays builds a new indexing pipeline every epoch, for the training and the
    validation data: about 0.1-0.2 s per epoch on 2 cores, more than the training steps of a
    small model. These datasets are built once; the arrays stay in memory.
    """
    import tensorflow as tf

    def batches(split: tuple, shuffle: bool) -> tf.data.Dataset:
        x, y = split
        dataset = tf.data.Dataset.from_tensor_slices(x if generative else (x, y))
        if shuffle:
            dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        else:
            dataset = dataset.cache()
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    return batches(data.train, shuffle=True), batches(data.val, shuffle=False)


def fit(
    model: keras.Model,
    data: Prepared,
    cfg: TrainConfig,
    callbacks: list[keras.callbacks.Callback],
    generative: bool,
    seed: int,
) -> dict[str, list[float]]:
    """Run ``model.fit`` with one progress line per epoch; return the per-epoch history."""
    from deepfit.callbacks import EpochProgress

    train, val = input_pipeline(data, cfg.batch_size, seed, generative)
    history = model.fit(
        train,
        validation_data=val,
        epochs=cfg.epochs,
        shuffle=False,  # the training dataset reshuffles itself every epoch
        callbacks=[*callbacks, EpochProgress()],
        verbose=0,
    )
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def gradient_callback(
    model: keras.Model,
    data: Prepared,
    cfg: TrainConfig,
    seed: int,
    generative: bool,
    logger: EpochMetricsLogger,
) -> GradientNorms | None:
    """Per-layer gradient norms each epoch on a fixed, seeded sample of the training split,
    queued on ``logger`` as MLflow metrics ``grad_norm.<layer>``."""
    if not cfg.gradients.enabled:
        return None
    import numpy as np

    from deepfit.callbacks import GradientNorms, gan_gradient_probe, gradient_probe

    x, y = data.train
    n = min(cfg.gradients.samples, len(x))
    pick = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    if generative:
        probe = gan_gradient_probe(model, x[pick], seed)
    else:
        probe = gradient_probe(model, x[pick], y[pick])

    def log(norms: dict[str, float], epoch: int) -> None:
        logger.add({f"grad_norm.{k}": v for k, v in norms.items()}, epoch)

    return GradientNorms(probe, log)


def write_gradients(path: Path, records: list[dict[str, float]]) -> None:
    """Per-epoch gradient norms as ``{"layers": [...forward order], "norms": [[...], ...]}``
    (JSON objects would lose the layer order to sorted keys)."""
    layers = list(records[0])
    write_json(path, {"layers": layers, "norms": [[r[name] for name in layers] for r in records]})


def read_gradients(path: Path) -> list[dict[str, float]]:
    """What ``write_gradients`` wrote, back as one ``{layer: norm}`` per epoch in layer order."""
    import json

    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return [dict(zip(data["layers"], norms, strict=True)) for norms in data["norms"]]


def gradient_table(records: list[dict[str, float]]) -> str:
    """Long-format CSV (epoch,layer,norm) of per-epoch gradient norms, for DVC plots."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["epoch", "layer", "norm"])
    for epoch, norms in enumerate(records, start=1):
        writer.writerows([epoch, layer, repr(norm)] for layer, norm in norms.items())
    return buffer.getvalue()


def curve_tables(history: dict[str, list[float]]) -> dict[str, str]:
    """One CSV per metric with columns epoch,train,val so DVC overlays train and validation."""
    tables = {}
    for name, train_values in history.items():
        if name.startswith("val_") or f"val_{name}" not in history:
            continue
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["epoch", "train", "val"])
        for epoch, (train, val) in enumerate(
            zip(train_values, history[f"val_{name}"], strict=True)
        ):
            writer.writerow([epoch + 1, repr(train), repr(val)])
        tables[name] = buffer.getvalue()
    return tables


def best_epoch(history: dict[str, list[float]], generative: bool) -> int:
    """1-based epoch whose weights are kept: lowest val_loss, or the last one for a GAN."""
    val = history.get("val_loss")
    if generative or not val:
        return len(next(iter(history.values()), []))
    return min(range(len(val)), key=val.__getitem__) + 1


def train_run(run: RunConfig, params: Params, data: Prepared, out: TrainOutputs) -> dict[str, Any]:
    """Train one run end to end: build, fit, save model and curves, track everything in MLflow."""
    import keras

    from deepfit import figures, tracking
    from deepfit.callbacks import EpochMetricsLogger, FirstStep
    from deepfit.recovery import DivergenceGuard, TrainingBackup

    # Wall-clock marks of the start-up (the benchmark's P2 reads them from run.json).
    timeline = {"ready": time.time()}  # params valid, data loaded, TensorFlow imported
    spec = get_spec(run.model)
    keras.utils.set_random_seed(params.seeds.train)
    model = spec.build(run.arch, data.spec)
    steps = -(-len(data.train[0]) // run.train.batch_size)
    compile_model(model, data.spec, run.train, steps, spec.generative)

    flat = {**run.flat(), "seeds.split": params.seeds.split, "seeds.train": params.seeds.train}
    # A killed attempt left its last completed epoch here (outside DVC's outputs).
    backup = TrainingBackup.for_run(run, params, data.manifest)
    # Outputs are staged and swapped in only when everything, MLflow included, has succeeded.
    with (
        tracking.start_run(run, params.mlflow.experiment, flat, tags=backup.tags()) as active,
        atomic_dir(out.model_dir) as model_dir,
        atomic_dir(out.figures_dir) as figures_dir,
        atomic_dir(out.curves_dir) as curves_dir,
        atomic_dir(out.gradients_dir) as gradients_dir,
    ):
        import mlflow

        timeline["tracking"] = time.time()  # MLflow run open
        first_step = FirstStep()
        logger = EpochMetricsLogger()
        callbacks = [
            DivergenceGuard(on_diverge=backup.clear),  # first: raises before anything logs NaN
            *standard_callbacks(run.train, spec.generative),
            logger,
            first_step,
        ]
        gradients = gradient_callback(
            model, data, run.train, params.seeds.train, spec.generative, logger
        )
        if gradients is not None:
            callbacks.append(gradients)
        if spec.generative:
            callbacks.append(_sample_grid(run, params, figures_dir))
        callbacks.append(
            backup.attach(active.info.run_id, callbacks, figures_dir, tracking.log_epoch_rows)
        )
        started = time.perf_counter()
        try:
            fit(model, data, run.train, callbacks, spec.generative, params.seeds.train)
        finally:
            logger.flush()  # also the curve up to a failure or an interruption
        history = backup.history  # every epoch, also those of an interrupted attempt
        seconds = time.perf_counter() - started + backup.seconds_before
        _check_finite(model, history)

        epochs = len(next(iter(history.values())))
        summary = {
            "run": run.name,
            "mlflow_run_id": active.info.run_id,
            "run_name": active.info.run_name,
            "mlflow_experiment_id": active.info.experiment_id,
            "epochs": epochs,
            "best_epoch": best_epoch(history, spec.generative),
            "params": int(model.count_params()),
            "seconds": round(seconds, 3),
            "seconds_per_epoch": round(seconds / max(1, epochs), 4),
            "timeline": {**timeline, "first_step": first_step.at},
        }
        model.save(model_dir / MODEL_FILE)
        write_json(model_dir / HISTORY_FILE, history)
        write_json(model_dir / RUN_FILE, summary)
        figures.run_curves_png(history, figures_dir / "learning_curves.png", title=run.name)
        for metric, table in curve_tables(history).items():
            (curves_dir / f"{metric}.csv").write_text(table)
        records = gradients.ordered_records() if gradients is not None else []
        (gradients_dir / "norms.csv").write_text(gradient_table(records))
        if records:
            write_gradients(model_dir / GRADIENTS_FILE, records)
            figures.gradient_norms_png(records, figures_dir / "gradients.png", title=run.name)

        mlflow.log_metrics(
            {
                "best_epoch": summary["best_epoch"],
                "epochs_run": epochs,
                "train_seconds": summary["seconds"],
                "n_params": summary["params"],
            }
        )
        mlflow.log_artifacts(str(figures_dir), artifact_path="figures/training")
        _log_model(spec.generative, model, data.val[0][:5])
    backup.clear()
    log.info(
        "%s: %d epochs in %.1fs, best epoch %d",
        run.name,
        summary["epochs"],
        seconds,
        summary["best_epoch"],
    )
    return summary


def _sample_grid(run: RunConfig, params: Params, figures_dir: Path) -> keras.callbacks.Callback:
    import mlflow

    from deepfit import figures
    from deepfit.callbacks import SampleGrid

    def render(model: keras.Model, epoch: int) -> Path:
        images = model.sample(64, seed=params.seeds.train)
        path = figures_dir / f"samples_epoch_{epoch:04d}.png"
        return figures.image_grid_png(images, path, title=f"{run.name}: epoch {epoch}", ncols=8)

    def log_image(path: Path) -> None:
        mlflow.log_artifact(str(path), artifact_path="figures/samples")

    return SampleGrid(run.train.sample_every, render, log_image)


def _check_finite(model: keras.Model, history: dict[str, list[float]]) -> None:
    import numpy as np

    bad = [k for k, values in history.items() if values and not np.isfinite(values[-1])]
    if bad or not all(np.isfinite(w).all() for w in model.get_weights()):
        raise FloatingPointError(
            f"training diverged: non-finite {', '.join(bad) or 'weights'}; "
            "lower train.optimizer.learning_rate or add clipnorm"
        )


def _log_model(generative: bool, model: keras.Model, x_example: np.ndarray) -> None:
    """Log the model to MLflow with its signature (for a GAN: the generator, noise -> images)."""
    from importlib import metadata

    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    target = model.generator if generative else model
    if generative:
        rng = np.random.default_rng(0)
        x_example = rng.normal(size=(len(x_example), model.latent_dim)).astype("float32")
    signature = infer_signature(x_example, np.asarray(target.predict(x_example, verbose=0)))
    # Explicit requirements: MLflow's inference would reload the model in a subprocess.
    pip = [f"{name}=={metadata.version(name)}" for name in ("keras", "tensorflow-cpu")]
    mlflow.keras.log_model(target, name="model", signature=signature, pip_requirements=pip)
