"""params.yaml: strict typed schema, loading, run resolution and one-line errors.

Nothing here imports TensorFlow, Keras or MLflow, so a bad key is reported in well under a
second, before any stage does work.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from deepfit.data.config import DatasetConfig, dataset_kind_and_task
from deepfit.models import REGISTRY, get_spec
from deepfit.models.base import ArchConfig

PARAMS_FILE = Path("params.yaml")
RUN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
TOP_LEVEL_KEYS = (
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
)
RUN_KEYS = ("model", "dataset", "train")

OptimizerName = Literal["sgd", "adam", "adamw", "nadam", "rmsprop", "adagrad", "adamax"]
_MOMENTUM_OPTIMIZERS = {"sgd", "rmsprop"}
_BETA_OPTIMIZERS = {"adam", "adamw", "nadam", "adamax"}
_GENERIC_OPTIMIZER_KEYS = {"learning_rate", "clipnorm", "weight_decay"}


class ConfigError(ValueError):
    """A params.yaml problem; the message is one line naming the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Seeds(_Strict):
    split: int = Field(ge=0)
    train: int = Field(ge=0)


class OptimizerConfig(_Strict):
    name: OptimizerName = "adam"
    learning_rate: float = Field(1e-3, gt=0, le=10)
    momentum: float | None = Field(None, ge=0, lt=1)
    nesterov: bool = False
    beta_1: float | None = Field(None, gt=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    clipnorm: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _fits_optimizer(self) -> OptimizerConfig:
        if self.momentum is not None and self.name not in _MOMENTUM_OPTIMIZERS:
            raise ValueError(
                f"momentum is used only by {', '.join(sorted(_MOMENTUM_OPTIMIZERS))}, "
                f"not {self.name}"
            )
        if self.nesterov and (self.name != "sgd" or not self.momentum):
            raise ValueError("nesterov needs name: sgd and momentum > 0")
        if self.beta_1 is not None and self.name not in _BETA_OPTIMIZERS:
            raise ValueError(
                f"beta_1 is used only by {', '.join(sorted(_BETA_OPTIMIZERS))}, not {self.name}"
            )
        return self


class EarlyStoppingConfig(_Strict):
    enabled: bool = True
    patience: int = Field(10, ge=1)
    min_delta: float = Field(0.0, ge=0)


class GradientsConfig(_Strict):
    """Per-layer gradient norms measured on a fixed training batch at the end of every epoch."""

    enabled: bool = True
    samples: int = Field(256, ge=1, le=65_536)


class TextSamplesConfig(_Strict):
    """Text a language model writes from a fixed prompt, at each temperature (every
    ``train.sample_every`` epochs to MLflow, and the kept model's into reports/samples/)."""

    prompt: str = Field("The ", min_length=1)
    length: int = Field(200, ge=1, le=10_000)  # characters generated after the prompt
    temperatures: list[Annotated[float, Field(gt=0, le=10)]] = Field([0.5, 1.0], min_length=1)


class TrainConfig(_Strict):
    epochs: int = Field(ge=1, le=10_000)
    batch_size: int = Field(ge=1, le=65_536)
    # Batches per compiled call: identical results, less overhead per step (Keras' compile arg).
    steps_per_execution: int = Field(1, ge=1, le=10_000)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: Literal["constant", "cosine", "plateau"] = "constant"
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    sample_every: int = Field(10, ge=1)  # GAN and language models: epochs between samples
    text_samples: TextSamplesConfig = TextSamplesConfig()
    gradients: GradientsConfig = GradientsConfig()
    # Training rows scored after every epoch in inference mode, as validation is: the fit
    # verdict's training curve (deepfit.train.callbacks.TrainingEval); 0: Keras' running loss.
    eval_samples: int = Field(256, ge=0, le=65_536)


class ScorerConfig(_Strict):
    """The fixed classifier whose features score GAN samples; own seed, so it never moves."""

    dataset: str
    epochs: int = Field(40, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    steps_per_execution: int = Field(1, ge=1, le=10_000)  # as train.steps_per_execution
    seed: int = Field(0, ge=0)


class MlflowConfig(_Strict):
    experiment: str = Field("deepfit", min_length=1)


class FitConfig(_Strict):
    """Thresholds of the fit verdict (deepfit.evaluate.diagnosis documents the rules)."""

    underfit_skill: float = Field(0.5, ge=0, le=1)
    overfit_gap: float = Field(0.1, gt=0, le=1)
    smoothing: int = Field(5, ge=1, le=51)
    noise_multiple: float = Field(3.0, gt=0)
    min_rise_epochs: int = Field(3, ge=1)
    overfit_rise_skill: float = Field(0.002, gt=0, le=1)
    diverged_rise: float = Field(0.5, gt=0)
    vanishing_ratio: float = Field(0.01, gt=0, lt=1)
    exploding_norm: float = Field(1000.0, gt=0)

    @model_validator(mode="after")
    def _odd_window(self) -> FitConfig:
        # A centred median needs a middle epoch.
        if self.smoothing % 2 == 0:
            raise ValueError(f"smoothing must be an odd number of epochs, not {self.smoothing}")
        return self


# The classical baselines of each family (``baselines:`` in params) and the grid keys each takes:
# every grid value is a non-empty list, tried on the validation split (deepfit.evaluate.baselines).
BASELINE_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "classification": {
        "logreg": ("standardize", "C"),
        "svm": ("standardize", "C", "gamma"),
        "knn": ("standardize", "n_neighbors", "weights"),
        "gbt": ("learning_rate", "max_leaf_nodes", "max_iter"),
    },
    "text_classification": {
        "tfidf_logreg": ("ngram_range", "min_df", "max_df", "max_features", "sublinear_tf", "C"),
    },
    "forecast": {"persistence": (), "seasonal_naive": ("period",), "ar": ("p",)},
    "regression": {
        "constant": (),
        "linear": ("alpha",),
        "gbt": ("learning_rate", "max_leaf_nodes", "max_iter"),
    },
    "generation": {"gmm_pca": ("components", "mixtures")},
    "language_model": {"unigram": (), "ngram": ("order", "discount")},
    "translation": {"length_mode": (), "copy": ()},
}
BaselineGrids = dict[str, dict[str, dict[str, list[Any]]]]


StudyKind = Literal["capacity", "regularisation", "activation", "sequence_length"]
_STUDY_KEYS = ("kind", "train_size", "lengths", "base", "variants")
# A sequence_length study compares recurrent cells on a character corpus: its variants may set
# one of these models (the other kinds keep the base's model).
RECURRENT_MODELS = ("rnn", "lstm")


@dataclass(frozen=True)
class RunConfig:
    """One run: a model on a dataset with its architecture and resolved training settings."""

    name: str
    model: str
    dataset: str
    arch: ArchConfig
    train: TrainConfig

    def flat(self) -> dict[str, Any]:
        """All resolved settings as flat dotted keys (what MLflow logs as params)."""
        nested = {
            "model": self.model,
            "dataset": self.dataset,
            "arch": self.arch.model_dump(),
            "train": self.train.model_dump(),
        }
        return flatten(nested)


@dataclass(frozen=True)
class StudyConfig:
    """A classic fit study: one base run trained in several variants on the same data."""

    name: str
    kind: StudyKind
    base: RunConfig
    variants: dict[str, RunConfig]
    train_size: int | None = None  # training samples (sequence_length: characters) to train on
    lengths: tuple[int, ...] = ()  # sequence_length: window lengths the gradient is measured in

    @property
    def dataset(self) -> str:
        return self.base.dataset


# --- tuning: Optuna searches over a run's keys (deepfit.tune runs them) --------------------------

SamplerName = Literal["tpe", "random", "grid"]
PrunerName = Literal["median", "hyperband", "none"]
# Validation metrics a search may choose by, per task, and their direction. The test split is
# never used to choose.
TUNING_METRICS = {
    "classification": {"val_loss": "minimize", "val_accuracy": "maximize"},
    "regression": {"val_loss": "minimize", "val_mae": "minimize"},
}


class FloatRange(_Strict):
    """``{type: float, low, high, log, step}``: a linear or log-scale range."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)


class IntRange(_Strict):
    """``{type: int, low, high, step, log}``: integers from low to high inclusive."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)


class Categorical(_Strict):
    """``{type: categorical, choices: [...]}``: values tried as given (lists too)."""

    type: Literal["categorical"]
    choices: list[Any]


SpaceParam = FloatRange | IntRange | Categorical
_SPACE_TYPES: dict[str, type[BaseModel]] = {
    "float": FloatRange,
    "int": IntRange,
    "categorical": Categorical,
}


class SamplerConfig(_Strict):
    name: SamplerName = "tpe"
    seed: int | None = Field(None, ge=0)  # default: seeds.train


class _TuningEntry(_Strict):
    base: str
    space: dict[str, Any]
    trials: int = Field(ge=1, le=100_000)
    timeout: float | None = Field(None, gt=0)
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerName = "median"
    metric: str = "val_loss"
    fixed: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class TuningConfig:
    """One search: a base run, the space of its keys, the budget, sampler, pruner and metric."""

    name: str
    base: RunConfig
    space: dict[str, SpaceParam]
    trials: int
    timeout: float | None
    sampler: SamplerName
    seed: int
    pruner: PrunerName
    metric: str
    direction: str
    fixed: dict[str, Any]
    # What a trial's run is parsed from: the base block as written, the shared train defaults
    # and the datasets (every trial validates as a run, with the run parser).
    base_raw: Mapping[str, Any] = field(repr=False, compare=False)
    train_raw: Mapping[str, Any] = field(repr=False, compare=False)
    datasets: Mapping[str, Any] = field(repr=False, compare=False)

    def trial_run(self, values: Mapping[str, Any]) -> RunConfig:
        """The run of one trial: ``values`` (space key -> value) merged into the base run."""
        body = deep_merge(self.base_raw, nest({**self.fixed, **values}))
        return _parse_run(self.base.name, body, self.train_raw, self.datasets)


@dataclass(frozen=True)
class Params:
    seeds: Seeds
    datasets: dict[str, DatasetConfig]
    train: TrainConfig
    runs: dict[str, RunConfig]
    scorer: ScorerConfig
    mlflow: MlflowConfig
    fit: FitConfig = field(default_factory=FitConfig)
    studies: dict[str, StudyConfig] = field(default_factory=dict)
    # family -> baseline -> grid; a family left out of params.yaml has no baselines
    baselines: BaselineGrids = field(default_factory=dict)
    tuning: dict[str, TuningConfig] = field(default_factory=dict)

    def search(self, name: str) -> TuningConfig:
        if name not in self.tuning:
            declared = ", ".join(self.tuning) or "none"
            raise ConfigError(f"tuning.{name}: no such search; declared searches: {declared}")
        return self.tuning[name]

    def run(self, name: str) -> RunConfig:
        if name not in self.runs:
            raise ConfigError(f"runs.{name}: no such run; declared runs: {', '.join(self.runs)}")
        return self.runs[name]

    def study(self, name: str) -> StudyConfig:
        if name not in self.studies:
            declared = ", ".join(self.studies) or "none"
            raise ConfigError(f"studies.{name}: no such study; declared studies: {declared}")
        return self.studies[name]

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ConfigError(
                f"datasets.{name}: no such dataset; declared datasets: {', '.join(self.datasets)}"
            )
        return self.datasets[name]


# --- loading ----------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as ``1e-3`` (PyYAML's 1.1 rules say str)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file safely; a missing or malformed file is a one-line ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and strictly validate params.yaml; raise ConfigError naming the first bad key."""
    return parse_params(read_yaml(Path(path)), source=str(path))


def _check_scored(runs: dict[str, RunConfig], scorer: ScorerConfig) -> None:
    """A generative run's samples are scored by the classifier trained on ``scorer.dataset``
    (features for the Frechet distance, classes for the cover): the run must draw that data."""
    for name, run in runs.items():
        if get_spec(run.model).generative and run.dataset != scorer.dataset:
            raise ConfigError(
                f"runs.{name}.dataset: {run.dataset!r}, but a {run.model} run is scored by the "
                f"classifier trained on scorer.dataset ({scorer.dataset!r}); set scorer.dataset: "
                f"{run.dataset} to score it"
            )


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping."""
    try:
        return _parse(raw)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _parse(raw: Any) -> Params:
    _expect_mapping(raw, "")
    unknown = [k for k in raw if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key; allowed keys: {', '.join(TOP_LEVEL_KEYS)}")
    for key in ("seeds", "datasets", "train", "runs", "scorer"):
        if key not in raw:
            raise ConfigError(f"{key}: missing required section")

    seeds = _validate(Seeds, raw["seeds"], "seeds")
    datasets = _parse_datasets(raw["datasets"])
    train = _validate(TrainConfig, raw["train"], "train")
    runs = _parse_runs(raw["runs"], raw["train"], datasets)
    scorer = _validate(ScorerConfig, raw["scorer"], "scorer")
    if scorer.dataset not in datasets:
        raise ConfigError(
            f"scorer.dataset: {scorer.dataset!r} is not declared; declared: {', '.join(datasets)}"
        )
    _check_scored(runs, scorer)
    mlflow = _validate(MlflowConfig, raw.get("mlflow") or {}, "mlflow")
    fit = _validate(FitConfig, raw.get("fit") or {}, "fit")
    studies = _parse_studies(raw.get("studies") or {}, raw["train"], datasets)
    baselines = _parse_baselines(raw.get("baselines") or {})
    tuning = _parse_tuning(raw.get("tuning") or {}, raw, runs, datasets, seeds)
    return Params(seeds, datasets, train, runs, scorer, mlflow, fit, studies, baselines, tuning)


def _parse_baselines(raw: Any) -> BaselineGrids:
    """``baselines: {family: {name: {key: [values]}}}``, every name, key and grid checked."""
    _expect_mapping(raw, "baselines")
    grids: BaselineGrids = {}
    for family, declared in raw.items():
        where = f"baselines.{family}"
        if family not in BASELINE_KEYS:
            raise ConfigError(f"{where}: unknown family; allowed: {', '.join(BASELINE_KEYS)}")
        _expect_mapping(declared, where)
        if not declared:
            raise ConfigError(f"{where}: declare at least one baseline (or leave the family out)")
        grids[family] = {}
        for name, grid in declared.items():
            known = BASELINE_KEYS[family]
            if name not in known:
                raise ConfigError(f"{where}.{name}: unknown baseline; allowed: {', '.join(known)}")
            grids[family][name] = _parse_grid(grid or {}, f"{where}.{name}", known[name])
    return grids


def _parse_grid(grid: Any, where: str, allowed: tuple[str, ...]) -> dict[str, list[Any]]:
    _expect_mapping(grid, where)
    for key, values in grid.items():
        if key not in allowed:
            listed = ", ".join(allowed) or "none (this baseline has no hyper-parameters)"
            raise ConfigError(f"{where}.{key}: unknown key; allowed keys: {listed}")
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{where}.{key}: expected a non-empty list of values to try (got {values!r})"
            )
    return {key: list(values) for key, values in grid.items()}


def _parse_datasets(raw: Any) -> dict[str, DatasetConfig]:
    _expect_mapping(raw, "datasets")
    if not raw:
        raise ConfigError("datasets: declare at least one dataset")
    adapter: TypeAdapter[DatasetConfig] = TypeAdapter(DatasetConfig)
    out = {}
    for name, body in raw.items():
        _check_name(name, "datasets")
        _expect_mapping(body, f"datasets.{name}")
        out[name] = _validate(adapter, body, f"datasets.{name}")
    return out


def _parse_runs(
    raw: Any, train_raw: Mapping[str, Any], datasets: Mapping[str, DatasetConfig]
) -> dict[str, RunConfig]:
    _expect_mapping(raw, "runs")
    if not raw:
        raise ConfigError("runs: declare at least one run")
    return {name: _parse_run(name, body, train_raw, datasets) for name, body in raw.items()}


def _parse_studies(
    raw: Any, train_raw: Mapping[str, Any], datasets: Mapping[str, DatasetConfig]
) -> dict[str, StudyConfig]:
    _expect_mapping(raw, "studies")
    return {name: _parse_study(name, body, train_raw, datasets) for name, body in raw.items()}


def _parse_study(
    name: str, body: Any, train_raw: Mapping[str, Any], datasets: Mapping[str, DatasetConfig]
) -> StudyConfig:
    where = f"studies.{name}"
    _check_name(name, "studies")
    _expect_mapping(body, where)
    unknown = [k for k in body if k not in _STUDY_KEYS]
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown key; allowed keys: {', '.join(_STUDY_KEYS)}"
        )
    kind = _validate(TypeAdapter(StudyKind), body.get("kind"), f"{where}.kind")
    train_size = body.get("train_size")
    if train_size is not None and (
        not isinstance(train_size, int) or isinstance(train_size, bool) or train_size < 2
    ):
        raise ConfigError(
            f"{where}.train_size: expected an integer >= 2 or null (got {train_size!r})"
        )
    lengths = _study_lengths(body.get("lengths"), kind, where)
    base_raw = body.get("base")
    _expect_mapping(base_raw, f"{where}.base")
    model = base_raw.get("model")
    if model in REGISTRY and get_spec(model).generative:
        raise ConfigError(f"{where}.base.model: studies compare supervised models, not {model!r}")
    base = _parse_run(name, base_raw, train_raw, datasets, where=f"{where}.base")
    if kind == "sequence_length":
        _check_sequence_study(base, datasets, where)
    variants_raw = body.get("variants")
    _expect_mapping(variants_raw, f"{where}.variants")
    if len(variants_raw) < 2:
        raise ConfigError(f"{where}.variants: declare at least two variants to compare")
    variants = {}
    for variant, override in variants_raw.items():
        vwhere = f"{where}.variants.{variant}"
        _check_name(variant, f"{where}.variants")
        _expect_mapping(override, vwhere)
        kept = ("dataset",) if kind == "sequence_length" else ("model", "dataset")
        if set(kept) & set(override):
            raise ConfigError(f"{vwhere}: a variant keeps the base {' and '.join(kept)}")
        if kind == "sequence_length" and override.get("model", model) not in RECURRENT_MODELS:
            raise ConfigError(
                f"{vwhere}.model: a sequence_length study compares {', '.join(RECURRENT_MODELS)}"
                f" (got {override['model']!r})"
            )
        merged = deep_merge(base_raw, override)
        variants[variant] = _parse_run(variant, merged, train_raw, datasets, where=vwhere)
    return StudyConfig(name, kind, base, variants, train_size, lengths)


def _study_lengths(raw: Any, kind: str, where: str) -> tuple[int, ...]:
    """A sequence_length study's window lengths: two or more, increasing, each >= 2."""
    if kind != "sequence_length":
        if raw is not None:
            raise ConfigError(f"{where}.lengths: only a sequence_length study has lengths")
        return ()
    if (
        not isinstance(raw, list)
        or len(raw) < 2
        or any(not isinstance(n, int) or isinstance(n, bool) or n < 2 for n in raw)
        or raw != sorted(set(raw))
    ):
        raise ConfigError(
            f"{where}.lengths: expected two or more increasing window lengths >= 2 "
            f"(characters), e.g. [16, 64, 256] (got {raw!r})"
        )
    return tuple(raw)


def _check_sequence_study(
    base: RunConfig, datasets: Mapping[str, DatasetConfig], where: str
) -> None:
    """A sequence_length study trains recurrent language models on a character corpus."""
    if base.model not in RECURRENT_MODELS:
        raise ConfigError(
            f"{where}.base.model: a sequence_length study compares "
            f"{', '.join(RECURRENT_MODELS)} (got {base.model!r})"
        )
    source = getattr(datasets[base.dataset], "source", None)
    if source != "text":
        raise ConfigError(
            f"{where}.base.dataset: a sequence_length study needs a character corpus "
            f"(source: text), but {base.dataset!r} is source: {source}"
        )


def _parse_tuning(
    raw: Any,
    params_raw: Mapping[str, Any],
    runs: Mapping[str, RunConfig],
    datasets: Mapping[str, DatasetConfig],
    seeds: Seeds,
) -> dict[str, TuningConfig]:
    _expect_mapping(raw, "tuning")
    return {
        name: _parse_search(name, body, params_raw, runs, datasets, seeds)
        for name, body in raw.items()
    }


def _parse_search(
    name: str,
    body: Any,
    params_raw: Mapping[str, Any],
    runs: Mapping[str, RunConfig],
    datasets: Mapping[str, DatasetConfig],
    seeds: Seeds,
) -> TuningConfig:
    where = f"tuning.{name}"
    _check_name(name, "tuning")
    _expect_mapping(body, where)
    entry = _validate(_TuningEntry, body, where)
    if entry.base not in runs:
        raise ConfigError(f"{where}.base: no run {entry.base!r}; declared runs: {', '.join(runs)}")
    base = runs[entry.base]
    if get_spec(base.model).generative:
        raise ConfigError(f"{where}.base: searches tune supervised runs, not {base.model!r}")
    metrics = TUNING_METRICS[dataset_kind_and_task(datasets[base.dataset])[1]]
    if entry.metric not in metrics:
        raise ConfigError(
            f"{where}.metric: {entry.metric!r} is not a validation metric of run {entry.base}; "
            f"allowed: {', '.join(metrics)} (the test split is never used to choose)"
        )
    if not entry.space:
        raise ConfigError(f"{where}.space: declare at least one key to search")
    keys = run_keys(base)
    base_raw = params_raw["runs"][entry.base]
    search = TuningConfig(
        name=name,
        base=base,
        space={},
        trials=entry.trials,
        timeout=entry.timeout,
        sampler=entry.sampler.name,
        seed=seeds.train if entry.sampler.seed is None else entry.sampler.seed,
        pruner=entry.pruner,
        metric=entry.metric,
        direction=metrics[entry.metric],
        fixed={},
        base_raw=base_raw,
        train_raw=params_raw["train"],
        datasets=datasets,
    )
    for key, value in entry.fixed.items():
        _check_space_key(f"{where}.fixed.{key}", key, keys, base)
        _check_trial_value(search, f"{where}.fixed.{key}", key, value)
    search = replace(search, fixed=dict(entry.fixed))
    for key, spec in entry.space.items():
        kwhere = f"{where}.space.{key}"
        _check_space_key(kwhere, key, keys, base)
        search.space[key] = _parse_space_param(spec, kwhere, search.sampler)
        for value in space_corners(search.space[key]):
            _check_trial_value(search, kwhere, key, value)
    return search


def run_keys(run: RunConfig) -> list[str]:
    """The keys a search may set under a run: its architecture's and ``train.*``, dotted."""
    arch = list(type(run.arch).model_fields)
    return arch + [f"train.{key}" for key in flatten(run.train.model_dump())]


def _check_space_key(where: str, key: str, keys: list[str], run: RunConfig) -> None:
    if key not in keys:
        raise ConfigError(
            f"{where}: not a key of run {run.name} ({run.model} on {run.dataset}); "
            f"keys: {', '.join(keys)}"
        )


def _parse_space_param(spec: Any, where: str, sampler: str) -> SpaceParam:
    _expect_mapping(spec, where)
    kind = spec.get("type")
    if kind not in _SPACE_TYPES:
        raise ConfigError(f"{where}.type: expected one of {', '.join(_SPACE_TYPES)} (got {kind!r})")
    param = _validate(_SPACE_TYPES[kind], spec, where)
    if isinstance(param, Categorical):
        if not param.choices:
            raise ConfigError(f"{where}.choices: expected a non-empty list of values to try")
        return param
    if param.low >= param.high:
        raise ConfigError(f"{where}: low ({param.low!r}) must be below high ({param.high!r})")
    if param.log and param.low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0 (got low {param.low!r})")
    if param.log and (param.step or 1) != 1:
        raise ConfigError(f"{where}: a log-scale range takes no step")
    if sampler == "grid" and isinstance(param, FloatRange) and param.step is None:
        raise ConfigError(
            f"{where}: sampler grid needs a step for a float range (or a categorical list)"
        )
    return param


def space_corners(param: SpaceParam) -> list[Any]:
    """The values that bound a space dimension: its ends, or every choice."""
    if isinstance(param, Categorical):
        return list(param.choices)
    return [param.low, param.high]


def _check_trial_value(search: TuningConfig, where: str, key: str, value: Any) -> None:
    try:
        search.trial_run({key: value})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {value!r} does not make a valid run: {exc}") from None


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys to nested mappings: ``{"train.epochs": 8}`` -> ``{"train": {"epochs": 8}}``."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _parse_run(
    name: str,
    body: Any,
    train_raw: Mapping[str, Any],
    datasets: Mapping[str, DatasetConfig],
    where: str = "",
) -> RunConfig:
    where = where or f"runs.{name}"
    _check_name(name, "runs")
    _expect_mapping(body, where)
    for key in ("model", "dataset"):
        if key not in body:
            raise ConfigError(f"{where}.{key}: missing required key")
    model, dataset = body["model"], body["dataset"]
    if model not in REGISTRY:
        raise ConfigError(f"{where}.model: unknown model {model!r}; valid: {', '.join(REGISTRY)}")
    if dataset not in datasets:
        raise ConfigError(
            f"{where}.dataset: {dataset!r} is not declared under datasets; "
            f"declared: {', '.join(datasets)}"
        )
    spec = REGISTRY[model]
    kind, task = dataset_kind_and_task(datasets[dataset])
    if kind not in spec.input_kinds:
        raise ConfigError(
            f"{where}: model {model!r} needs {' or '.join(sorted(spec.input_kinds))} data, "
            f"but dataset {dataset!r} is {kind} data"
        )
    if task not in spec.tasks:
        raise ConfigError(f"{where}: model {model!r} cannot do {task} (dataset {dataset!r})")

    overrides = body.get("train", {})
    _expect_mapping(overrides, f"{where}.train")
    train = _validate(TrainConfig, merge_train(train_raw, overrides), f"{where}.train")
    arch_raw = {k: v for k, v in body.items() if k not in RUN_KEYS}
    arch = _validate(spec.config, arch_raw, where, extra_keys=RUN_KEYS)
    return RunConfig(name=name, model=model, dataset=dataset, arch=arch, train=train)


# --- helpers ----------------------------------------------------------------------------------


def merge_train(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A run's training settings: shared defaults with the run's keys applied.

    A run that names a different optimizer keeps the shared learning rate, clipnorm and weight
    decay but not the shared optimizer's own options (sgd's momentum, adam's beta_1): they would
    not fit the new one.
    """
    merged = deep_merge(defaults, overrides)
    default_opt = defaults.get("optimizer")
    own_opt = overrides.get("optimizer")
    if (
        isinstance(default_opt, Mapping)
        and isinstance(own_opt, Mapping)
        and own_opt.get("name", default_opt.get("name")) != default_opt.get("name")
    ):
        generic = {k: v for k, v in default_opt.items() if k in _GENERIC_OPTIMIZER_KEYS}
        merged["optimizer"] = {**generic, **own_opt}
    return merged


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` applied key by key (nested mappings merge)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _check_name(name: Any, section: str) -> None:
    if not isinstance(name, str) or not RUN_NAME.match(name):
        raise ConfigError(
            f"{section}.{name}: names must be lower-case letters, digits and _, "
            "starting with a letter (they become stage, folder and MLflow run names)"
        )


def _expect_mapping(value: Any, where: str) -> None:
    if not isinstance(value, Mapping):
        label = where or "params"
        raise ConfigError(f"{label}: expected a mapping of keys, got {_describe(value)}")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if value is not None else "nothing (null)"


def _validate(
    schema: type[BaseModel] | TypeAdapter, value: Any, where: str, extra_keys: tuple = ()
) -> Any:
    try:
        if isinstance(schema, TypeAdapter):
            return schema.validate_python(value)
        return schema.model_validate(value)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, where, schema, extra_keys)) from None


def _format_error(exc: ValidationError, where: str, schema: Any, extra_keys: tuple = ()) -> str:
    errors = exc.errors(include_url=False)
    paths = [_user_path(e["loc"], schema) for e in errors]
    # The deepest error is the most specific: for a list given where one name or a list of
    # names is allowed, the bad item (activation.1), not "not a single name".
    pick = max(range(len(errors)), key=lambda i: len(paths[i]))
    first, loc = errors[pick], paths[pick]
    path = ".".join([where, *loc]) if where else ".".join(loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(schema, first["loc"][:-1])
        if len(first["loc"]) == 1:
            allowed = [*extra_keys, *allowed]
        message = "unknown key" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
    elif kind == "missing":
        message = "missing required key"
    elif kind in {"model_type", "dict_type"}:  # a whole section given as one value (-S train=5)
        message = f"expected a mapping of keys, got {_describe(first.get('input'))}"
    elif kind in {"union_tag_invalid", "literal_error"}:
        message = f"{first['msg']} (got {first.get('input')!r})"
    else:
        message = first["msg"].removeprefix("Value error, ")
        if kind not in {"value_error", "assertion_error"} and "input" in first:
            message += f" (got {first['input']!r})"
    # A value that fits no branch of a union (one activation or a list) fails every branch at
    # the same key: that is one problem, not several.
    others = len({tuple(p) for p in paths if p != loc[: len(p)]})
    more = f" (and {others} more problem(s))" if others else ""
    return f"{path}: {message}{more}"


def _user_path(loc: tuple[Any, ...], schema: Any) -> list[str]:
    """The key path as the user wrote it: without pydantic's union branch labels."""
    return [
        str(part)
        for part in loc
        if not _is_union_tag(part, schema) and not (isinstance(part, str) and "[" in part)
    ]


def _is_union_tag(part: Any, schema: Any) -> bool:
    # pydantic puts the discriminator value into error locations of tagged unions
    # (datasets.digits.digits.key); users never wrote that level, so drop it.
    return isinstance(schema, TypeAdapter) and isinstance(part, str) and part in _SOURCE_TAGS


def _allowed_keys(schema: Any, loc: tuple[Any, ...]) -> list[str]:
    model = schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None
    parts = list(loc)
    if model is None and parts:
        model = _SOURCE_TAGS.get(str(parts.pop(0)))
    for part in parts:
        if model is None:
            return []
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    return list(model.model_fields) if model is not None else []


def _source_tags() -> dict[str, type[BaseModel]]:
    from typing import get_args

    union = get_args(DatasetConfig)[0]
    tags = {}
    for member in get_args(union):
        source = member.model_fields["source"].annotation
        for tag in get_args(source):
            tags[tag] = member
    return tags


_SOURCE_TAGS: dict[str, type[BaseModel]] = _source_tags()
