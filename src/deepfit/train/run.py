"""train@<run>: build the run's model, fit it with deepfit's callbacks, save the model, its
history, learning curves, gradient norms and figures, and track all of it in MLflow.

``train_run`` is the one call the train stage makes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

from deepfit import figures, tracking
from deepfit.config import Params, RunConfig
from deepfit.data.prepare import IDENTITY
from deepfit.models import get_spec
from deepfit.outputs import (
    GRADIENTS_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    RUN_FILE,
    atomic_dir,
    write_gradients,
    write_json,
    write_text,
)
from deepfit.train.callbacks import DivergenceGuard, FirstStep, MlflowMetrics, SampleGrid
from deepfit.train.curves import curve_tables, gradient_table
from deepfit.train.gradients import gradient_callback
from deepfit.train.loop import best_epoch, compile_model, fit, standard_callbacks
from deepfit.train.resume import TrainingBackup

if TYPE_CHECKING:
    import numpy as np

    from deepfit.data import Prepared
    from deepfit.train.callbacks import GradientNorms

log = logging.getLogger(__name__)

# The column name of the logged text model's input example (any name, or none, is taken).
TEXT_COLUMN = "text"


@dataclass(frozen=True)
class TrainOutputs:
    """Where one run's training writes: model folder, learning-curve and gradient data, figures."""

    model_dir: Path
    curves_dir: Path
    gradients_dir: Path
    figures_dir: Path
    # The kept model's text samples (a language model), or a line saying there are none.
    samples: Path | None = None

    @classmethod
    def for_run(cls, name: str, root: Path = Path()) -> TrainOutputs:
        return cls(
            model_dir=root / "models" / name,
            curves_dir=root / "reports" / "plots" / name / "curves",
            gradients_dir=root / "reports" / "plots" / name / "gradients",
            figures_dir=root / "reports" / "figures" / name / "training",
            samples=root / "reports" / "samples" / f"{name}.txt",
        )


def train_run(run: RunConfig, params: Params, data: Prepared, out: TrainOutputs) -> dict[str, Any]:
    """Train one run end to end: build, fit, save model and curves, track everything in MLflow."""
    # Wall-clock marks of the start-up (the benchmark's P2 reads them from run.json).
    timeline = {"ready": time.time()}  # params valid, data loaded, TensorFlow imported
    model = build_model(run, params, data)
    # A killed attempt left its last completed epoch here (outside DVC's outputs).
    backup = TrainingBackup.for_run(run, params, data.manifest)
    # Outputs are staged and swapped in only when everything, MLflow included, has succeeded.
    with (
        tracking.start_run(
            run, params.mlflow.experiment, run_params(run, params), tags=backup.tags()
        ) as active,
        atomic_dir(out.model_dir) as model_dir,
        atomic_dir(out.figures_dir) as figures_dir,
        atomic_dir(out.curves_dir) as curves_dir,
        atomic_dir(out.gradients_dir) as gradients_dir,
    ):
        timeline["tracking"] = time.time()  # MLflow run open
        tracking.log_datasets(data.manifest, Path("data/prepared") / run.dataset)
        staged = TrainOutputs(model_dir, curves_dir, gradients_dir, figures_dir)
        first_step, metrics = FirstStep(), MlflowMetrics()
        generative = get_spec(run.model).generative
        gradients = gradient_callback(model, data, run.train, params.seeds.train, generative)
        callbacks = _callbacks(run, params, backup, [metrics, first_step], gradients, figures_dir)
        if data.spec.kind == "tokens":  # a language model writes text as it learns
            callbacks.append(_text_samples(run, params, data, figures_dir))
        backup.attach(active.info.run_id, callbacks, figures_dir, tracking.log_epoch_rows)
        history, seconds = _fit(model, data, run, params, [*callbacks, backup.callback], backup)
        summary = _summary(run, model, active.info, history, seconds)
        summary["timeline"] = {**timeline, "first_step": first_step.at}
        summary["mlflow_epoch_logging_seconds"] = round(metrics.seconds, 4)
        records = gradients.ordered_records() if gradients is not None else []
        save_outputs(staged, run.name, model, history, summary, records)
        samples = final_samples(run, params, model, data)
        _log_outputs(model, summary, figures_dir, data)
        if out.samples is not None:  # last: DVC's output appears only with the others
            write_text(out.samples, samples)
    backup.clear()
    log.info("%s: %d epochs in %.1fs, best epoch %d", run.name, *_brief(summary))
    return summary


def build_model(run: RunConfig, params: Params, data: Prepared) -> keras.Model:
    """The run's compiled model, its weights seeded by ``seeds.train`` (one seeding call)."""
    spec = get_spec(run.model)
    keras.utils.set_random_seed(params.seeds.train)
    model = spec.build(run.arch, data.spec)
    steps = -(-len(data.train[0]) // run.train.batch_size)
    compile_model(model, data.spec, run.train, steps, spec.generative)
    return model


def run_params(run: RunConfig, params: Params) -> dict[str, Any]:
    """What MLflow logs as the run's params: its resolved settings and both seeds."""
    return {**run.flat(), "seeds.split": params.seeds.split, "seeds.train": params.seeds.train}


def _callbacks(
    run: RunConfig,
    params: Params,
    backup: TrainingBackup,
    observers: list[keras.callbacks.Callback],
    gradients: GradientNorms | None,
    figures_dir: Path,
) -> list[keras.callbacks.Callback]:
    generative = get_spec(run.model).generative
    callbacks = [
        DivergenceGuard(on_diverge=backup.clear),  # first: raises before anything logs NaN
        *standard_callbacks(run.train, generative),
        *observers,  # MLflow epoch metrics, first-step time
    ]
    if gradients is not None:
        callbacks.append(gradients)
    if generative:
        callbacks.append(_sample_grid(run, params, figures_dir))
    return callbacks


def _fit(
    model: keras.Model,
    data: Prepared,
    run: RunConfig,
    params: Params,
    callbacks: list[keras.callbacks.Callback],
    backup: TrainingBackup,
) -> tuple[dict[str, list[float]], float]:
    """Fit; return every epoch's history (an interrupted attempt's too) and the seconds spent."""
    import mlflow

    generative = get_spec(run.model).generative
    started = time.perf_counter()
    try:
        fit(model, data, run.train, callbacks, generative, params.seeds.train)
    finally:
        mlflow.flush_async_logging()  # also the curve up to a failure or an interruption
    history = backup.history  # every epoch, also those of an interrupted attempt
    _check_finite(model, history)
    return history, time.perf_counter() - started + backup.seconds_before


def _summary(
    run: RunConfig, model: keras.Model, info: Any, history: dict[str, list[float]], seconds: float
) -> dict[str, Any]:
    epochs = len(next(iter(history.values())))
    return {
        "run": run.name,
        "mlflow_run_id": info.run_id,
        "run_name": info.run_name,
        "mlflow_experiment_id": info.experiment_id,
        "epochs": epochs,
        "best_epoch": best_epoch(history, get_spec(run.model).generative),
        "params": int(model.count_params()),
        "seconds": round(seconds, 3),
        "seconds_per_epoch": round(seconds / max(1, epochs), 4),
    }


def save_outputs(
    out: TrainOutputs,
    name: str,
    model: keras.Model,
    history: dict[str, list[float]],
    summary: dict[str, Any],
    records: list[dict[str, float]],
) -> None:
    """The model, history, run summary, curve and gradient tables and figures into ``out``."""
    model.save(out.model_dir / MODEL_FILE)
    write_json(out.model_dir / HISTORY_FILE, history)
    write_json(out.model_dir / RUN_FILE, summary)
    figures.run_curves_png(history, out.figures_dir / "learning_curves.png", title=name)
    for metric, table in curve_tables(history).items():
        write_text(out.curves_dir / f"{metric}.csv", table)
    write_text(out.gradients_dir / "norms.csv", gradient_table(records))
    if records:
        write_gradients(out.model_dir / GRADIENTS_FILE, records)
        figures.gradient_norms_png(records, out.figures_dir / "gradients.png", title=name)


def _log_outputs(
    model: keras.Model, summary: dict[str, Any], figures_dir: Path, data: Prepared
) -> None:
    import mlflow

    mlflow.log_metrics(
        {
            "best_epoch": summary["best_epoch"],
            "epochs_run": summary["epochs"],
            "train_seconds": summary["seconds"],
            "n_params": summary["params"],
        }
    )
    mlflow.log_artifacts(str(figures_dir), artifact_path="figures/training")
    if "table" in data.manifest:
        _log_table_model(model, data)
    elif data.spec.kind == "text":
        _log_text_model(model, data)
    elif data.spec.kind == "tokens":
        _log_language_model(model, data)
    elif data.spec.kind == "translation":
        _log_translation_model(model, data)
    else:
        _log_model(model, data.val[0][:5], data.manifest)


def _brief(summary: dict[str, Any]) -> tuple[int, float, int]:
    return summary["epochs"], summary["seconds"], summary["best_epoch"]


def _sample_grid(run: RunConfig, params: Params, figures_dir: Path) -> keras.callbacks.Callback:
    import mlflow

    def render(model: keras.Model, epoch: int) -> Path:
        images = model.sample(64, seed=params.seeds.train)
        path = figures_dir / f"samples_epoch_{epoch:04d}.png"
        return figures.image_grid_png(images, path, title=f"{run.name}: epoch {epoch}", ncols=8)

    def log_image(path: Path) -> None:
        mlflow.log_artifact(str(path), artifact_path="figures/samples")

    return SampleGrid(run.train.sample_every, render, log_image)


def _text_samples(
    run: RunConfig, params: Params, data: Prepared, figures_dir: Path
) -> keras.callbacks.Callback:
    """Every ``sample_every`` epochs: text from the prompt at each temperature, into
    figures/ and MLflow (``samples/epoch_NNNN.txt``)."""
    import mlflow

    from deepfit.train.sampling import sample_text, samples_text

    vocab, window = data.manifest["class_names"], data.spec.input_shape[0]
    cfg = run.train.text_samples

    def render(model: keras.Model, epoch: int) -> Path:
        texts = sample_text(model, vocab, cfg, window, params.seeds.train)
        path = figures_dir / f"samples_epoch_{epoch:04d}.txt"
        write_text(path, samples_text(texts, cfg, f"{run.name}: epoch {epoch}"))
        return path

    def log_text(path: Path) -> None:
        mlflow.log_text(path.read_text(encoding="utf-8"), f"samples/{path.name}")

    # Not at the end: final_samples writes the kept model's text after training.
    return SampleGrid(run.train.sample_every, render, log_text, at_end=False)


def final_samples(run: RunConfig, params: Params, model: keras.Model, data: Prepared) -> str:
    """The kept model's text samples (logged to MLflow as samples/final.txt), or for a run that
    is not a language model a line saying so."""
    if data.spec.kind != "tokens":
        return f"{run.name}: not a language model; no text samples\n"
    import mlflow

    from deepfit.train.sampling import sample_text, samples_text

    cfg = run.train.text_samples
    vocab, window = data.manifest["class_names"], data.spec.input_shape[0]
    texts = sample_text(model, vocab, cfg, window, params.seeds.train)
    text = samples_text(texts, cfg, f"{run.name}: the kept model (best epoch)")
    mlflow.log_text(text, "samples/final.txt")
    return text


def _check_finite(model: keras.Model, history: dict[str, list[float]]) -> None:
    import numpy as np

    bad = [k for k, values in history.items() if values and not np.isfinite(values[-1])]
    if bad or not all(np.isfinite(w).all() for w in model.get_weights()):
        raise FloatingPointError(
            f"training diverged: non-finite {', '.join(bad) or 'weights'}; "
            "lower train.optimizer.learning_rate or add clipnorm"
        )


def raw_input_model(
    model: keras.Model, scale: dict[str, Any] | None, target: dict[str, float] | None = None
) -> keras.Model:
    """``model`` behind the feature scaling that prepare applied (digits: divided by the
    training maximum; Keras datasets: by 255; NPZ vectors: standardised; a series: scaled like
    its targets), so that it takes the values of the user's files, and, for regression, with
    its outputs back in the target's own units (``target``: the manifest's ``target_scale``).
    Unchanged when prepare scaled neither (raw pixels, tables, classes)."""
    from keras import layers

    method = (scale or {}).get("method")
    if method in ("divide_by_train_max", "divide"):
        front = layers.Rescaling(1.0 / _divisor(scale), name="prepare_scale")
    elif method == "standardize":
        std = [s * s for s in scale["std"]]
        front = layers.Normalization(mean=scale["mean"], variance=std, name="prepare_scale")
    elif method == "target_scale":  # sunspots: the series standardised with its targets' scale
        variance = target["std"] ** 2
        front = layers.Normalization(mean=target["mean"], variance=variance, name="prepare_scale")
    else:
        front = None
    unit = target is None or target == IDENTITY
    if front is None and unit:
        return model
    inputs = keras.Input(shape=model.input_shape[1:], name="raw")
    outputs = model(front(inputs) if front is not None else inputs)
    if not unit:
        outputs = layers.Rescaling(target["std"], offset=target["mean"], name="target_units")(
            outputs
        )
    return keras.Model(inputs, outputs, name=f"{model.name}_raw_input")


def raw_values(
    x: np.ndarray, scale: dict[str, Any] | None, target: dict[str, float] | None = None
) -> np.ndarray:
    """Prepared (scaled) inputs back in the units of the user's files: ``raw_input_model``'s."""
    import numpy as np

    method = (scale or {}).get("method")
    if method in ("divide_by_train_max", "divide"):
        return (np.asarray(x, dtype=np.float64) * _divisor(scale)).astype(np.float32)
    if method == "standardize":
        raw = np.asarray(x, dtype=np.float64) * np.asarray(scale["std"]) + scale["mean"]
        return raw.astype(np.float32)
    if method == "target_scale":
        raw = np.asarray(x, dtype=np.float64) * target["std"] + target["mean"]
        return raw.astype(np.float32)
    return np.asarray(x)


def _divisor(scale: dict[str, Any]) -> float:
    return float(scale["max"] if scale["method"] == "divide_by_train_max" else scale["value"])


def _log_model(model: keras.Model, x_example: np.ndarray, manifest: dict[str, Any]) -> None:
    """Log the model to MLflow with its signature, taking the user's raw values and giving
    regression targets in their own units (for a GAN: the generator, noise -> images)."""
    from importlib import metadata

    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    scale, units = manifest.get("feature_scale"), manifest.get("target_scale")
    generative = hasattr(model, "generator")
    target = model.generator if generative else raw_input_model(model, scale, units)
    # not a memory map: MLflow stores it as the example
    x_example = np.asarray(x_example) if generative else raw_values(x_example, scale, units)
    if generative:
        rng = np.random.default_rng(0)
        x_example = rng.normal(size=(len(x_example), model.latent_dim)).astype("float32")
    signature = infer_signature(x_example, np.asarray(target.predict(x_example, verbose=0)))
    # Explicit requirements: MLflow's inference would reload the model in a subprocess.
    pip = [f"{name}=={metadata.version(name)}" for name in ("keras", "tensorflow-cpu")]
    mlflow.keras.log_model(target, name="model", signature=signature, pip_requirements=pip)


def _log_table_model(network: keras.Model, data: Prepared) -> None:
    """Log a table run as a pyfunc model that takes raw CSV rows (a DataFrame of the columns):
    the fitted preprocessing as Keras layers in front of ``network``, in a small wrapper."""
    from deepfit.data.tables import example_frame, raw_input_model, signature

    table, manifest = data.manifest["table"], data.manifest
    model = raw_input_model(network, table, manifest["target_scale"], data.spec.task)
    outputs = manifest["class_names"] or [table["target"]]
    config = {
        "columns": [{k: c[k] for k in ("name", "kind", "fill")} for c in table["columns"]],
        "outputs": outputs,
    }
    _log_raw_rows_model(model, config, signature(table, outputs), example_frame(table))


def _log_text_model(network: keras.Model, data: Prepared) -> None:
    """Log a text run as a pyfunc model that takes raw strings (one column of any name, a list,
    an array or a Series) and returns each class's probability: ``network`` reads them with
    its own TextVectorization layer (the vocabulary of the training split)."""
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = data.manifest["class_names"]
    # An unnamed column: MLflow then takes a list of strings as well as a DataFrame.
    config = {"columns": [{"name": None, "kind": "text", "fill": ""}], "outputs": outputs}
    signature = ModelSignature(
        Schema([ColSpec("string")]), Schema([ColSpec("float", name) for name in outputs])
    )
    example = pd.DataFrame({TEXT_COLUMN: [str(text) for text in data.val[0][:5]]})
    _log_raw_rows_model(network, config, signature, example)


def _log_language_model(network: keras.Model, data: Prepared) -> None:
    """Log a character language model as a pyfunc model that takes raw strings and returns,
    for each, the probability of every character of the vocabulary coming next."""
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = data.manifest["class_names"]  # the vocabulary, by id; 0 the unknown token
    config = {"columns": [{"name": None, "kind": "characters", "fill": ""}], "outputs": outputs}
    signature = ModelSignature(
        Schema([ColSpec("string")]), Schema([ColSpec("float", name) for name in outputs])
    )
    windows = data.val[0][:5]
    example = pd.DataFrame({TEXT_COLUMN: ["".join(outputs[i] for i in w) for w in windows]})
    _log_raw_rows_model(network, config, signature, example)


def _log_translation_model(network: keras.Model, data: Prepared) -> None:
    """Log the encoder-decoder as a pyfunc model that takes raw sentences and returns their
    greedy translations. The model carries the two files it needs (MLflow ``code_paths``): the
    Keras class of the network and the corpus' words and ids."""
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from deepfit.data import words
    from deepfit.models import seq2seq_network

    details = data.manifest["details"]
    config = {
        "columns": [{"name": None, "kind": "words", "fill": ""}],
        "outputs": ["translation"],
        "source_vocab": details["source_vocab"],
        "target_vocab": data.manifest["class_names"],
        "source_length": details["source_length"],
    }
    signature = ModelSignature(
        Schema([ColSpec("string")]), Schema([ColSpec("string", "translation")])
    )
    sources = words.ids_to_text(data.val[0][:5], details["source_vocab"])
    example = pd.DataFrame({TEXT_COLUMN: sources})
    code = [seq2seq_network.__file__, words.__file__]
    _log_raw_rows_model(network, config, signature, example, code)


def _log_raw_rows_model(
    model: keras.Model, config: dict, signature: Any, example: Any, code: list[str] | None = None
) -> None:
    """Log ``model`` (one input ``column_<i>`` per column of ``config``, or a single input)
    inside the raw_rows_model.py wrapper: a pyfunc model of raw rows in, named outputs out.
    ``code``: files the wrapper imports by module name (MLflow ``code_paths``)."""
    import tempfile
    from importlib import metadata

    import mlflow

    names = ("keras", "tensorflow-cpu", "pandas", "numpy")
    pip = [f"{name}=={metadata.version(name)}" for name in names]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raw_rows.keras"
        model.save(path)
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("raw_rows_model.py")),
            artifacts={"keras_model": str(path)},
            model_config=config,
            signature=signature,
            input_example=example,
            pip_requirements=pip,
            code_paths=code,
        )
