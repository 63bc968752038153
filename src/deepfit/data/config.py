"""Strict dataset configs (params.yaml `datasets:`), one model per source, no heavy imports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# What a prepared dataset looks like to a model: "image" is (H, W, C), "sequence" is (T, F),
# "vector" is (F,), "tokens" is (T,) integer ids of a vocabulary of ``n_outputs`` symbols (a
# character language model predicts the next id at every position), "translation" is (S,) source
# token ids translated into (T,) target token ids, "text" is one raw string per sample (the
# model's TextVectorization layer, built from ``vocabulary``, turns it into words).
InputKind = Literal["image", "sequence", "vector", "tokens", "translation", "text"]
Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class DataSpec:
    """What a builder needs to know about the data: input shape/kind, task and output size."""

    input_shape: tuple[int, ...]
    kind: InputKind
    task: Task
    n_outputs: int  # classes for classification, targets for regression
    # Stored inputs are raw (uint8 pixels): the model's first layer multiplies them by this.
    input_scale: float | None = None
    # A translation's source vocabulary (its outputs are n_outputs target tokens) and the
    # number of target tokens it decodes.
    input_vocab: int | None = None
    target_length: int | None = None
    # A text dataset's words (most frequent first, fitted on the training split; without the
    # padding and unknown tokens) and the words per text a sequence model reads.
    vocabulary: tuple[str, ...] | None = None
    sequence_length: int | None = None


Fraction = Annotated[float, Field(gt=0.0, lt=0.5)]
Count = Annotated[int, Field(ge=1)]
Side = Annotated[int, Field(ge=1, le=4096)]
ImageSize = Annotated[list[Side], Field(min_length=2, max_length=2)]
KerasName = Literal["mnist", "fashion_mnist", "cifar10", "imdb"]
# Words a text dataset keeps (Keras' ``max_tokens``: the padding and unknown tokens count) and
# words per text that sequence models read (``output_sequence_length``: padded or cut).
VocabularySize = Annotated[int, Field(ge=3, le=1_000_000)]
TextLength = Annotated[int, Field(ge=1, le=100_000)]
DEFAULT_VOCABULARY = 20_000
DEFAULT_TEXT_LENGTH = 200

# val + test must leave a real training set.
MAX_HELD_OUT = 0.8


class _Dataset(BaseModel):
    # strict like the architecture configs: "10" is not silently read as 10.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def kind_and_task(self) -> tuple[InputKind, Task]:
        raise NotImplementedError


class _Fractions(_Dataset):
    val_fraction: Fraction = 0.15
    test_fraction: Fraction = 0.2

    @model_validator(mode="after")
    def _leave_training_data(self) -> _Fractions:
        total = self.val_fraction + self.test_fraction
        if total >= MAX_HELD_OUT:
            raise ValueError(
                f"val_fraction + test_fraction must be < {MAX_HELD_OUT}, got {total:g}"
            )
        return self


class _UserFile(_Fractions):
    path: str

    @field_validator("path")
    @classmethod
    def _inside_raw(cls, value: str) -> str:
        problem = raw_path_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class DigitsConfig(_Fractions):
    """scikit-learn's bundled 8x8 digits, stratified split, pixels scaled by the train max."""

    source: Literal["digits"]

    def kind_and_task(self) -> tuple[InputKind, Task]:
        return "image", "classification"


class SunspotsConfig(_Dataset):
    """Yearly sunspot numbers; forecast next year from `window` past years; last years are test."""

    source: Literal["sunspots"]
    window: Count = 12
    val_size: Count = 30
    test_size: Count = 40

    def kind_and_task(self) -> tuple[InputKind, Task]:
        return "sequence", "regression"


class AddingConfig(_Dataset):
    """The adding problem (Hochreiter & Schmidhuber 1997), generated from the split seed."""

    source: Literal["adding"]
    length: Annotated[int, Field(ge=2)] = 50
    train_size: Count = 10000
    val_size: Count = 1000
    test_size: Count = 2000

    def kind_and_task(self) -> tuple[InputKind, Task]:
        return "sequence", "regression"


ColumnName = Annotated[str, Field(min_length=1)]
Missing = Literal["error", "impute"]


class CsvConfig(_UserFile):
    """A CSV under data/raw/: `target` is predicted from the other columns (numeric, categorical,
    boolean), or from `columns` only, or from all but `drop`."""

    source: Literal["csv"]
    target: ColumnName
    task: Task
    columns: Annotated[list[ColumnName], Field(min_length=1)] | None = None
    drop: list[ColumnName] = Field(default_factory=list)
    # error: an empty feature cell stops prepare; impute: train median / a "missing" category
    missing: Missing = "error"

    @model_validator(mode="after")
    def _columns_or_drop(self) -> CsvConfig:
        if self.columns is not None and self.drop:
            raise ValueError("give either columns (use only these) or drop, not both")
        for key, names in (("columns", self.columns or []), ("drop", self.drop)):
            if self.target in names:
                raise ValueError(f"{key}: must not name the target column {self.target!r}")
            if len(set(names)) != len(names):
                raise ValueError(f"{key}: names a column twice")
        return self

    def kind_and_task(self) -> tuple[InputKind, Task]:
        return "vector", self.task


class NpzConfig(_UserFile):
    """An NPZ under data/raw/ with arrays `x` and `y`; `kind` says how to read the shape of x."""

    source: Literal["npz"]
    task: Task
    kind: InputKind

    def kind_and_task(self) -> tuple[InputKind, Task]:
        return self.kind, self.task


class ImagesConfig(_UserFile):
    """A folder under data/raw/ with one sub-folder of images per class (or train/ and test/)."""

    source: Literal["images"]
    image_size: ImageSize  # [height, width]: every image is resized to it
    color_mode: Literal["grayscale", "rgb"] = "rgb"

    def kind_and_task(self) -> tuple[InputKind, Task]:
        return "image", "classification"


class KerasConfig(_Dataset):
    """A keras.datasets set (images, or IMDB reviews as text); needs the Keras cache or a
    network connection."""

    source: Literal["keras"]
    name: KerasName
    val_fraction: Fraction = 0.1
    # Caps the samples drawn from Keras' training set (before val is split off); test stays whole.
    limit: Annotated[int, Field(ge=2)] | None = None
    # imdb only (a text dataset): as for text_folder; null means the text_folder default.
    vocabulary_size: VocabularySize | None = None
    sequence_length: TextLength | None = None

    @model_validator(mode="after")
    def _text_keys_for_text(self) -> KerasConfig:
        for key in ("vocabulary_size", "sequence_length"):
            if self.name != "imdb" and getattr(self, key) is not None:
                raise ValueError(f"{key}: only name: imdb is text; {self.name} takes no {key}")
        return self

    def text_settings(self) -> tuple[int, int]:
        """Vocabulary size and words per text of name: imdb."""
        return (
            self.vocabulary_size or DEFAULT_VOCABULARY,
            self.sequence_length or DEFAULT_TEXT_LENGTH,
        )

    def kind_and_task(self) -> tuple[InputKind, Task]:
        return ("text" if self.name == "imdb" else "image"), "classification"


class TextFolderConfig(_UserFile):
    """A folder under data/raw/ with one sub-folder of UTF-8 .txt files per class (or train/ and
    test/, each with the class folders: IMDB's aclImdb layout)."""

    source: Literal["text_folder"]
    # The class folders to use (null: every sub-folder); aclImdb/train/ also holds unsup/.
    classes: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=2)] | None = None
    vocabulary_size: VocabularySize = DEFAULT_VOCABULARY
    sequence_length: TextLength = DEFAULT_TEXT_LENGTH

    @field_validator("classes")
    @classmethod
    def _distinct_folders(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("names a class folder twice")
        if value is not None and any("/" in name or name in (".", "..") for name in value):
            raise ValueError("class folders are names of sub-folders, not paths")
        return value

    def text_settings(self) -> tuple[int, int]:
        """Vocabulary size and words per text."""
        return self.vocabulary_size, self.sequence_length

    def kind_and_task(self) -> tuple[InputKind, Task]:
        return "text", "classification"


Corpus = Literal["python_docs"]


class TextConfig(_Fractions):
    """A character corpus: a UTF-8 file under data/raw/ (`path`) or a bundled `corpus`, split by
    position into train/val/test blocks and cut into windows of `sequence_length` characters."""

    source: Literal["text"]
    path: str | None = None
    corpus: Corpus | None = None
    sequence_length: Annotated[int, Field(ge=1, le=100_000)] = 64
    # Keep only the corpus' first characters (null: all); small copies of the pipeline use it.
    max_characters: Annotated[int, Field(ge=1)] | None = None
    val_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.1

    @field_validator("path")
    @classmethod
    def _inside_raw(cls, value: str | None) -> str | None:
        problem = raw_path_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_text(self) -> TextConfig:
        if (self.path is None) == (self.corpus is None):
            raise ValueError(
                "give either path (a UTF-8 file under data/raw/) or corpus: python_docs"
            )
        return self

    def kind_and_task(self) -> tuple[InputKind, Task]:
        return "tokens", "classification"


class TranslationConfig(_Dataset):
    """A generated toy translation corpus (numbers in English words to French words), seeded
    by the split seed; distinct numbers per split, so test numbers are unseen in training."""

    source: Literal["translation"]
    task: Literal["numbers_en_fr"] = "numbers_en_fr"
    max_number: Annotated[int, Field(ge=2, le=999_999)] = 9999
    train_size: Count = 6000
    val_size: Count = 1000
    test_size: Count = 2000

    def kind_and_task(self) -> tuple[InputKind, Task]:
        return "translation", "classification"


DatasetConfig = Annotated[
    DigitsConfig
    | SunspotsConfig
    | AddingConfig
    | CsvConfig
    | NpzConfig
    | ImagesConfig
    | KerasConfig
    | TextConfig
    | TextFolderConfig
    | TranslationConfig,
    Field(discriminator="source"),
]


def dataset_kind_and_task(cfg: DatasetConfig) -> tuple[InputKind, Task]:
    """Input kind and task of a dataset, known from its config alone (no data is loaded)."""
    return cfg.kind_and_task()


def raw_path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a file inside data/raw/, or None when it can."""
    parts = PurePosixPath(path.replace("\\", "/"))
    if not path.strip():
        return "must name a file under data/raw/"
    if parts.is_absolute() or (len(path) > 1 and path[1] == ":"):
        return f"must be relative to data/raw/, got absolute path {path!r}"
    if ".." in parts.parts:
        return f"must stay inside data/raw/ ('..' is not allowed), got {path!r}"
    return None
