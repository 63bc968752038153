"""Tables (`source: csv`): read with pandas, pick and check columns, fit preprocessing on the
training rows, encode rows as a numeric matrix, and rebuild that preprocessing as Keras layers.

A feature column is *numeric* (int or float as pandas reads it), *boolean* (True/False) or
*categorical* (any other text). The fitted preprocessing is a plain dict (the manifest's
``table``): per column its kind, the dtype pandas reads, the fill value for empty cells, the mean
and std (numeric, boolean) or the vocabulary (categorical). ``encode`` turns raw rows into the
training matrix with it; ``raw_input_model`` puts the same steps in front of a trained network as
Keras preprocessing layers, so a logged model takes raw rows. pandas and Keras are imported inside
the functions that need them.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepfit.data.config import CsvConfig
from deepfit.data.errors import DataError

if TYPE_CHECKING:
    import keras
    import pandas as pd

log = logging.getLogger(__name__)

# The category an empty cell of a categorical column becomes under `missing: impute`.
MISSING = "(missing)"
OOV = "(unseen)"  # encoded name of the slot every category unseen in training shares
EXAMPLE_ROWS = 5  # raw validation rows kept in the manifest (the logged model's input example)
WIDE_VOCABULARY = 200  # more categories than this in one column are worth a warning


def line(row: int) -> str:
    """Where 0-based data row ``row`` sits, as a spreadsheet counts (the header is line 1)."""
    return f"line {row + 2} (data row {row + 1})"


# --- reading ---------------------------------------------------------------------------------


def read_table(file: Path) -> pd.DataFrame:
    """The CSV as pandas reads it (only empty cells are missing); one-line errors naming it."""
    import pandas as pd

    text = _decode(file)
    header = next(csv.reader(io.StringIO(text)), [])
    if not any(name.strip() for name in header):
        raise DataError(f"{file}: empty file (expected a header row)")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"{file}: column names repeat in the header: {', '.join(repeated)}")
    try:
        frame = pd.read_csv(
            io.StringIO(text), keep_default_na=False, na_values=[""], skipinitialspace=True
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{file}: not a readable CSV ({' '.join(str(exc).split())})") from exc
    if frame.empty:
        raise DataError(f"{file}: no data rows")
    return frame.rename(columns=str.strip)


def _decode(file: Path) -> str:
    data = file.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        at = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{file}: not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {at}); "
            "save the file as UTF-8"
        ) from None


# --- choosing and checking columns -----------------------------------------------------------


def feature_names(frame: pd.DataFrame, cfg: CsvConfig, file: Path, where: str) -> list[str]:
    """The feature columns `columns`/`drop` leave, each checked to exist in the file."""
    names = [str(name) for name in frame.columns]
    listed = ", ".join(names)
    if cfg.target not in names:
        raise DataError(f"{where}.target: no column {cfg.target!r} in {file}; columns: {listed}")
    for key in ("columns", "drop"):
        unknown = [n for n in getattr(cfg, key) or [] if n not in names]
        if unknown:
            raise DataError(f"{where}.{key}: no column {unknown[0]!r} in {file}; columns: {listed}")
    if cfg.columns is not None:
        return list(cfg.columns)
    features = [n for n in names if n != cfg.target and n not in cfg.drop]
    if not features:
        raise DataError(f"{where}.drop: leaves no feature column besides target {cfg.target!r}")
    return features


def check_columns(
    frame: pd.DataFrame, features: list[str], cfg: CsvConfig, file: Path, where: str
) -> dict[str, str]:
    """Kind of each feature (numeric, boolean, categorical) after checking every used column."""
    for name in [*features, cfg.target]:
        if frame[name].isna().all():
            raise DataError(
                f"{file}: column {name!r} is empty on every row; "
                f"fill it or leave it out ({where}.drop)"
            )
    _check_target(frame[cfg.target], cfg, file, where)
    kinds = {name: column_kind(frame[name], name, file) for name in features}
    if cfg.missing == "error":
        _refuse_empty_cells(frame[features], file, where)
    return kinds


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds (so messages say 0, not np.int64(0))."""
    return value.item() if hasattr(value, "item") else value


def _check_target(target: pd.Series, cfg: CsvConfig, file: Path, where: str) -> None:
    empty = np.flatnonzero(target.isna().to_numpy())
    if empty.size:
        where_empty = line(int(empty[0]))
        raise DataError(f"{file}: {where_empty}: empty cell in target column {target.name!r}")
    values = target.unique()
    if len(values) < 2:
        raise DataError(
            f"{where}.target: column {target.name!r} of {file} has one value "
            f"({_plain(values[0])!r}) on every row; a target needs at least 2 distinct values"
        )
    if cfg.task == "regression" and column_kind(target, str(target.name), file) != "numeric":
        raise DataError(f"{where}.target: column {target.name!r} of {file} is not numeric")


def column_kind(column: pd.Series, name: str, file: Path) -> str:
    """numeric, boolean or categorical; a column mixing numbers and text, or holding NaN/Inf
    written out, is an error naming its first bad cell."""
    import pandas as pd

    present = column.dropna()
    if pd.api.types.is_bool_dtype(column) or all(isinstance(v, bool) for v in present):
        return "boolean"
    if pd.api.types.is_numeric_dtype(column):
        bad = np.flatnonzero(~np.isfinite(column.to_numpy(np.float64)) & column.notna().to_numpy())
        if bad.size:
            cell = f"{line(int(bad[0]))}, column {name!r}"
            raise DataError(f"{file}: {cell}: {float(column.iloc[bad[0]])} is not a finite number")
        return "numeric"
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.notna().any():
        text = present[numbers.isna()]
        row = int(column.index.get_loc(text.index[0]))
        raise DataError(
            f"{file}: column {name!r} mixes numbers and text: {line(row)} holds {text.iloc[0]!r}"
        )
    return "categorical"


def _refuse_empty_cells(features: pd.DataFrame, file: Path, where: str) -> None:
    empty = features.isna().to_numpy()
    if empty.any():
        row, col = (int(i) for i in np.argwhere(empty)[0])
        raise DataError(
            f"{file}: {line(row)}, column {features.columns[col]!r}: empty cell "
            f"(fill it, or set {where}.missing: impute)"
        )


# --- fitting on train, encoding --------------------------------------------------------------


def fit_table(
    train: pd.DataFrame, kinds: dict[str, str], dtypes: dict[str, str], cfg: CsvConfig
) -> dict[str, Any]:
    """Preprocessing fitted on the training rows only: what the manifest records as ``table``."""
    columns = [_fit_column(train[name], kinds[name], dtypes[name]) for name in kinds]
    encoded = [n for column in columns for n in _slot_names(column)]
    return {"target": cfg.target, "missing": cfg.missing, "columns": columns, "encoded": encoded}


def _fit_column(column: pd.Series, kind: str, dtype: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": str(column.name), "kind": kind, "dtype": dtype}
    if kind == "categorical":
        filled = column.astype(object).where(column.notna(), MISSING).astype(str)
        vocabulary = sorted(filled.unique().tolist())
        if len(vocabulary) > WIDE_VOCABULARY:
            log.warning("column %r: %d categories, one input each", spec["name"], len(vocabulary))
        return {**spec, "fill": MISSING, "vocabulary": vocabulary}
    values = _as_float(column)
    # Train rows that are all empty cannot give a median; 0 keeps the column usable.
    median = float(np.nanmedian(values)) if np.isfinite(values).any() else 0.0
    values = np.where(np.isnan(values), median, values)
    std = float(values.std(dtype=np.float64)) or 1.0  # a constant column stays constant
    return {**spec, "fill": median, "mean": float(values.mean(dtype=np.float64)), "std": std}


def _slot_names(column: dict[str, Any]) -> list[str]:
    if column["kind"] != "categorical":
        return [column["name"]]
    return [f"{column['name']}={value}" for value in [OOV, *column["vocabulary"]]]


def _as_float(column: pd.Series) -> np.ndarray:
    return column.astype(object).where(column.notna(), np.nan).to_numpy(np.float64)


def encode(frame: pd.DataFrame, table: dict[str, Any]) -> np.ndarray:
    """Rows as the training matrix (float32): filled, standardised numbers; one-hot categories
    with slot 0 for a category training never saw."""
    parts = []
    for column in table["columns"]:
        cells = frame[column["name"]]
        if column["kind"] == "categorical":
            text = cells.astype(object).where(cells.notna(), column["fill"]).astype(str)
            index = {value: i + 1 for i, value in enumerate(column["vocabulary"])}
            codes = text.map(index).fillna(0).to_numpy(np.int64)
            parts.append(np.eye(len(index) + 1, dtype=np.float32)[codes])
        else:
            values = _as_float(cells)
            values = np.where(np.isnan(values), column["fill"], values)
            parts.append(((values - column["mean"]) / column["std"])[:, None])
    return np.concatenate(parts, axis=1).astype(np.float32)


def example_rows(frame: pd.DataFrame, table: dict[str, Any]) -> dict[str, list[Any]]:
    """The first raw rows of ``frame`` as JSON-able columns (empty cells as null)."""
    rows = frame.head(EXAMPLE_ROWS)
    return {
        column["name"]: [_json_cell(value) for value in rows[column["name"]].tolist()]
        for column in table["columns"]
    }


def example_frame(table: dict[str, Any]) -> pd.DataFrame:
    """The manifest's example rows as pandas reads them from the CSV (same column dtypes)."""
    import pandas as pd

    frame = pd.DataFrame(table["example"])
    for column in table["columns"]:
        if column["dtype"] in ("int64", "float64", "bool"):
            cells = frame[column["name"]]
            if column["dtype"] != "bool" or cells.notna().all():
                frame[column["name"]] = cells.astype(column["dtype"])
    return frame


def signature(table: dict[str, Any], outputs: list[str]) -> Any:
    """The logged model's MLflow signature: the CSV's feature columns in, named outputs out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    types = {"int64": "long", "float64": "double", "bool": "boolean"}
    inputs = [ColSpec(types.get(c["dtype"], "string"), c["name"]) for c in table["columns"]]
    return ModelSignature(Schema(inputs), Schema([ColSpec("float", name) for name in outputs]))


def _json_cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


# --- the same preprocessing as Keras layers --------------------------------------------------


def input_key(index: int) -> str:
    """The raw-input model's input for the table's ``index``-th column (any CSV header works)."""
    return f"column_{index}"


def raw_input_model(
    network: keras.Model, table: dict[str, Any], target_scale: dict[str, float], task: str
) -> keras.Model:
    """``network`` behind Keras preprocessing layers fitted as ``table`` records: one input per
    CSV column, ``column_<i>`` in the table's order (float32, or string for categories);
    regression outputs in the target's units.

    Empty numeric cells must be filled before the call (``table`` holds the fill values); an
    unseen category lands in the out-of-vocabulary slot.
    """
    import keras
    from keras import layers

    inputs: dict[str, Any] = {}
    parts = []
    for i, column in enumerate(table["columns"]):
        key = input_key(i)
        if column["kind"] == "categorical":
            inputs[key] = keras.Input(shape=(1,), dtype="string", name=key)
            lookup = layers.StringLookup(
                vocabulary=column["vocabulary"], num_oov_indices=1, output_mode="one_hot"
            )
            parts.append(lookup(inputs[key]))
        else:
            inputs[key] = keras.Input(shape=(1,), dtype="float32", name=key)
            norm = layers.Normalization(mean=column["mean"], variance=column["std"] ** 2)
            parts.append(norm(inputs[key]))
    x = layers.Concatenate(name="columns")(parts) if len(parts) > 1 else parts[0]
    outputs = network(x)
    if task == "regression":
        unscale = layers.Rescaling(target_scale["std"], offset=target_scale["mean"])
        outputs = unscale(outputs)
    return keras.Model(inputs, outputs, name=f"{network.name}_raw_rows")
