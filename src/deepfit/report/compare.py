"""``deepfit compare``: one table over the MLflow runs of the workspace and of DVC experiments.

Rows come from MLflow's client (never SQL); each row is one MLflow run with its key metric (from
the ``deepfit.evaluation`` tag and ``evaluate.metrics.KEY_METRICS``), chosen params and fit verdict.
Imported only by the ``compare`` subcommand: it pulls in pandas and MLflow.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from deepfit.evaluate.metrics import KEY_METRICS, key_metric_names
from deepfit.outputs import write_text

# Params shown by default, under short headers so the table fits 100-120 columns.
DEFAULT_PARAMS = {
    "arch.activation": "activation",
    "train.optimizer.name": "optimizer",
    "train.optimizer.learning_rate": "lr",
}
FAILED_STATUSES = ("FAILED", "KILLED")
WORKSPACE = "workspace"  # --exp value for runs made outside any DVC experiment
_TAGS = {
    "exp": "dvc_exp_name",
    "run": "deepfit.run",
    "model": "deepfit.model",
    "dataset": "deepfit.dataset",
    "fit": "deepfit.fit.verdict",
    "error": "deepfit.error",
}
# The terminal and markdown show `name` (`<run>@<exp>`); CSV also has exp, run, run_id, start.
_SHOWN = ["name", "model", "dataset", "status", "metric", "value", "ci95", "vs_best", "baseline"]
_CSV_ONLY = ["exp", "run", "run_id", "start"]
_INFO = {"run_id": "run_id", "name": "run_name", "status": "status", "start_time": "start_time"}
# Key metrics rank runs only within one dataset, key metric and test split (its MLflow digest).
COMPARABLE = ["dataset", "metric", "test_data"]


class CompareError(ValueError):
    """A problem the user can fix from the one-line message."""


@dataclass(frozen=True)
class Options:
    """What to select and how to order it; mirrors the ``deepfit compare`` flags."""

    runs: Sequence[str] = ()
    models: Sequence[str] = ()
    datasets: Sequence[str] = ()
    exps: Sequence[str] = ()
    where: Sequence[str] = ()
    sort: str | None = None
    descending: bool = False
    best_per: str | None = None
    columns: Sequence[str] = ()
    params: Sequence[str] = field(default_factory=lambda: list(DEFAULT_PARAMS))
    studies: bool = False  # include the runs of params' studies (tag deepfit.study)


# --- reading the store ------------------------------------------------------------------------


def load_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Every active run of ``experiment``: info, ``metrics.*``, ``params.*``, ``tags.*`` columns."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    _check_reachable(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(e.name for e in client.search_experiments()) or "none"
            raise CompareError(
                f"no experiment {experiment!r} in {tracking_uri} (experiments there: {names})"
            )
        runs, token = [], None
        while True:
            page = client.search_runs([found.experiment_id], max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    except MlflowException as exc:
        raise CompareError(f"cannot read {tracking_uri}: {_first_line(exc.message)}") from None
    return runs_frame(runs)


def runs_frame(runs: Iterable[Any]) -> pd.DataFrame:
    """MLflow ``Run`` objects as one row each, with the table's own columns added."""
    rows = []
    for run in runs:
        row = {column: getattr(run.info, attr) for column, attr in _INFO.items()}
        row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
        row.update({f"params.{k}": v for k, v in run.data.params.items()})
        row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
        row["test_data"] = _test_digest(run)
        rows.append(row)
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*_INFO, "test_data"])
    return _with_table_columns(frame)


def _test_digest(run: Any) -> str:
    """The digest of the test split a run logged as its MLflow input ("" if none)."""
    inputs = run.inputs.dataset_inputs if run.inputs else []
    for item in inputs:
        if any(t.key == "mlflow.data.context" and t.value == "testing" for t in item.tags):
            return item.dataset.digest
    return ""


def _check_reachable(uri: str) -> None:
    # MLflow retries an unreachable server for minutes; a CLI should say so at once.
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
        except urllib.error.HTTPError:
            pass  # the server answered; a proxy may not route /health
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CompareError(f"cannot reach the MLflow server at {uri}: {reason}") from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():  # MLflow would create an empty store there
            raise CompareError(f"no MLflow store at {path}; run the pipeline first (make run)")


def _first_line(text: str) -> str:
    return (str(text).strip().splitlines() or [""])[0][:300]


def _with_table_columns(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column, tag in _TAGS.items():
        frame[column] = frame.get(f"tags.{tag}")
    for param, header in DEFAULT_PARAMS.items():
        frame[header] = frame.get(f"params.{param}")
    frame["start"] = [_start(ms) for ms in frame["start_time"]]
    kinds = frame.get("tags.deepfit.evaluation", pd.Series([None] * len(frame)))
    keys = [key_metric_names(kind) if kind in KEY_METRICS else None for kind in kinds]
    frame["metric"] = [k[0] if k else None for k in keys]
    frame["value"] = [_metric(frame, i, k[0]) if k else math.nan for i, k in enumerate(keys)]
    frame["baseline"] = [_metric(frame, i, k[1]) if k else math.nan for i, k in enumerate(keys)]
    for end in ("ci_low", "ci_high"):
        frame[f"_{end}"] = [
            _metric(frame, i, f"{k[0]}.{end}") if k else math.nan for i, k in enumerate(keys)
        ]
    frame["ci95"] = [
        f"[{low:.3g}, {high:.3g}]" if not (math.isnan(low) or math.isnan(high)) else ""
        for low, high in zip(frame["_ci_low"], frame["_ci_high"], strict=True)
    ]
    # Lower is better after this sign flip, whatever the metric's direction.
    frame["_rank"] = [
        (-v if k[2] == "higher" else v) if k else math.nan
        for v, k in zip(frame["value"], keys, strict=True)
    ]
    return frame


def _metric(frame: pd.DataFrame, index: int, name: str) -> float:
    column = f"metrics.{name}"
    return frame[column].iloc[index] if column in frame else math.nan


def _start(ms: Any) -> str:
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return ""
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


# --- selecting and ordering -------------------------------------------------------------------


def resolve(frame: pd.DataFrame, key: str, what: str = "column") -> str:
    """The frame column a user's key names: a table column, then a metric, a param, a tag."""
    for candidate in (key, f"metrics.{key}", f"params.{key}", f"tags.{key}"):
        if candidate in frame.columns and not candidate.startswith("_"):
            return candidate
    metrics = sorted(c.removeprefix("metrics.") for c in frame.columns if c.startswith("metrics."))
    hint = f"; metrics here: {_some(metrics)}" if metrics else ""
    raise CompareError(f"unknown {what} {key!r}: not a column, metric, param or tag{hint}")


def select(frame: pd.DataFrame, options: Options) -> pd.DataFrame:
    """Rows matching every filter: --run, --model, --dataset, --exp, each --where, --studies."""
    keep = pd.Series(True, index=frame.index)
    if not options.studies and "tags.deepfit.study" in frame:
        keep &= frame["tags.deepfit.study"].isna()
    for column, wanted in (
        ("run", options.runs),
        ("model", options.models),
        ("dataset", options.datasets),
    ):
        if wanted:
            keep &= frame[column].isin(_split(wanted))
    if options.exps:
        exps = _split(options.exps)
        in_workspace = frame["exp"].isna() & (WORKSPACE in exps)
        keep &= frame["exp"].isin(exps) | in_workspace
    for condition in options.where:
        key, value = _parse_where(condition)
        column = resolve(frame, key, "--where key")
        keep &= frame[column].map(lambda cell, value=value: _same(cell, value))
    return frame[keep]


def _split(values: Sequence[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _parse_where(condition: str) -> tuple[str, str]:
    key, sep, value = condition.partition("=")
    if not sep or not key.strip():
        raise CompareError(f"--where {condition!r}: expected KEY=VALUE, e.g. arch.activation=relu")
    return key.strip(), value.strip()


def _same(cell: Any, value: str) -> bool:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return False
    if str(cell) == value:
        return True
    try:
        return float(cell) == float(value)  # 1e-3 matches the logged 0.001
    except ValueError:
        return False


def best_per(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """The best finished run per value of ``key`` by its key metric and direction.

    Key metrics are comparable only on the same dataset, metric and test split, so those split
    a group too (``--best-per model`` gives one row for rnn on sunspots and one for rnn on
    adding, and one per version of a dataset whose test split changed).
    """
    column = resolve(frame, key, "--best-per key")
    ranked = frame[(frame["status"] == "FINISHED") & frame["_rank"].notna()]
    ranked = ranked.sort_values(["_rank", "start_time"], ascending=[True, False])
    return ranked.drop_duplicates([column, *COMPARABLE])


def order(frame: pd.DataFrame, sort: str | None = None, descending: bool = False) -> pd.DataFrame:
    """By ``sort`` (missing values last), else by run, best key metric first, newest first.

    A study's or search's runs (``--studies``) stay together under its name: its parent runs
    first, then its variants or trials by name, numbers in names by value (width_8 before
    width_32)."""
    if sort is None:
        study = frame.get("tags.deepfit.study", pd.Series(None, index=frame.index, dtype=object))
        member = study.notna() & (frame["run"] != study)  # a variant or trial, not the parent
        return frame.assign(
            _group=study.where(study.notna(), frame["run"]),
            _member=member,
            _name=frame["name"].where(member, "").map(_numbers_padded),
        ).sort_values(
            ["_group", "_member", "_name", "_rank", "start_time"],
            ascending=[True, True, True, True, False],
            na_position="last",
        )
    column = resolve(frame, sort, "sort metric")
    values = frame[column]
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().sum() == values.notna().sum():
        values = numbers  # params are strings in MLflow; sort "0.01" and "0.1" as numbers
    return frame.assign(_sort=values).sort_values(
        "_sort", ascending=not descending, na_position="last", kind="stable"
    )


def _numbers_padded(name: str) -> str:
    return re.sub(r"\d+", lambda digits: digits.group().zfill(12), name)


def compare_table(frame: pd.DataFrame, options: Options) -> pd.DataFrame:
    """The selected, ordered rows with the table's columns; headers as the user named them."""
    rows = select(frame, options)
    if options.best_per:
        rows = best_per(rows, options.best_per)
    rows = order(rows, options.sort, options.descending).assign(vs_best=within_noise(rows))
    headers = [DEFAULT_PARAMS.get(p, p) for p in options.params]
    columns = {c: c for c in _SHOWN} | {h: resolve(frame, h) for h in headers} | {"fit": "fit"}
    columns |= {key: resolve(frame, key) for key in _split(options.columns)}
    if options.sort and resolve(frame, options.sort) not in columns.values():
        columns[options.sort] = resolve(frame, options.sort)  # show what the rows are sorted by
    hidden = [c for c in _CSV_ONLY if c not in columns]
    columns |= {c: c for c in hidden}
    table = rows[list(columns.values())].copy()
    table.columns = list(columns)
    table.attrs["params"] = [
        header
        for header, source in columns.items()
        if source.startswith("params.") or source in DEFAULT_PARAMS.values()
    ]
    return _hide(table.reset_index(drop=True), hidden)


def within_noise(rows: pd.DataFrame) -> pd.Series:
    """Per row: ``best`` for the best finished run of its dataset and key metric, ``within
    noise`` when its 95 % interval overlaps the best one's, else ``worse``; blank without one.

    Only runs evaluated on the test split of the newest such run are judged; the others were
    scored on another version of the data (an edited CSV, a changed split) and are marked
    ``other data``."""
    verdicts = pd.Series("", index=rows.index, dtype=object)
    ranked = rows[(rows["status"] == "FINISHED") & rows["_rank"].notna()]
    current = on_newest_split(ranked, ["dataset", "metric"])
    verdicts[ranked.index[~current]] = "other data"
    for _, group in ranked[current].groupby(["dataset", "metric"]):
        best = group.sort_values(["_rank", "start_time"], ascending=[True, False]).iloc[0]
        for index, row in group.iterrows():
            if index == best.name:
                verdicts[index] = "best"
            elif math.isnan(row["_ci_low"]) or math.isnan(best["_ci_low"]):
                continue
            else:
                overlap = row["_ci_low"] <= best["_ci_high"] and best["_ci_low"] <= row["_ci_high"]
                verdicts[index] = "within noise" if overlap else "worse"
    return verdicts


def on_newest_split(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Per row: whether it was evaluated on the test split (its MLflow digest) of the newest
    finished, evaluated run with the same ``keys``. A metric on an older version of the data
    (an edited CSV, a corrected corpus) is not comparable with today's."""
    ranked = frame[(frame["status"] == "FINISHED") & frame["_rank"].notna()]
    newest = ranked.sort_values("start_time").drop_duplicates(keys, keep="last")
    current = set(newest[[*keys, "test_data"]].fillna("").itertuples(index=False, name=None))
    rows = frame[[*keys, "test_data"]].fillna("").itertuples(index=False, name=None)
    return pd.Series([row in current for row in rows], index=frame.index, dtype=bool)


def failed_table(frame: pd.DataFrame, options: Options) -> pd.DataFrame:
    """Selected runs that ended FAILED or KILLED, newest first, with their ``deepfit.error``."""
    rows = select(frame, options)
    rows = rows[rows["status"].isin(FAILED_STATUSES)].sort_values("start_time", ascending=False)
    columns = ["name", "model", "dataset", "status", "start", "error", "exp", "run", "run_id"]
    return _hide(rows[columns].reset_index(drop=True), ["exp", "run", "run_id"])


def _hide(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    table.attrs["csv_only"] = columns  # in the CSV, not in the terminal or markdown table
    return table


def _some(names: Sequence[str], limit: int = 12) -> str:
    more = f", … ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# --- output -----------------------------------------------------------------------------------


def text_table(table: pd.DataFrame, max_cell: int = 60) -> str:
    """Aligned plain-text table, numbers right-aligned, CSV-only columns left out.

    Cells are cut at ``max_cell`` characters, except in the last column (an error message).
    """
    table = _shown(table)
    headers = list(table.columns)
    numeric = [_is_numeric(table[c]) for c in headers]
    cells = [[cell[:max_cell] for cell in row[:-1]] + [row[-1]] for row in _cells(table)]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rules = ["-" * w for w in widths]
    return "\n".join([line(headers), line(rules), *(line(r) for r in cells)]) + "\n"


def markdown_table(table: pd.DataFrame) -> str:
    """The terminal table as GitHub markdown."""
    table = _shown(table)
    headers = list(table.columns)
    align = ["---:" if _is_numeric(table[c]) else "---" for c in headers]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    for row in _cells(table):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines) + "\n"


def csv_text(table: pd.DataFrame) -> str:
    """Every column, numbers at full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.itertuples(index=False):
        writer.writerow(["" if _missing(v) else v for v in row])
    return buffer.getvalue()


def write_table(table: pd.DataFrame, path: Path, fmt: str) -> Path:
    """Write ``table`` atomically as ``markdown`` or ``csv``."""
    text = markdown_table(table) if fmt == "markdown" else csv_text(table)
    return write_text(Path(path), text)


def curves_png(
    tracking_uri: str, table: pd.DataFrame, metric: str, path: Path, title: str = ""
) -> Path:
    """Overlay ``metric`` per epoch (MLflow step) of every run in ``table``; write one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    fig = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    drawn = 0
    for run_id, name in zip(table["run_id"], table["name"], strict=True):
        history = sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
        if history:
            ax.plot([m.step for m in history], [m.value for m in history], label=name)
            drawn += 1
    if not drawn:
        raise CompareError(f"none of the {len(table)} selected runs has a {metric!r} history")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=1 + drawn // 16)
    return _save_png(fig, Path(path))


def _save_png(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    hidden = table.attrs.get("csv_only", [])
    return table[[c for c in table.columns if c not in hidden]]  # attrs go along


def _cells(table: pd.DataFrame) -> list[list[str]]:
    """Every row as the cells the terminal and markdown show. A param is text in MLflow; a
    fraction in it gets 4 significant digits like the metrics (a sampled learning rate
    0.0017296005618143992 shows as 0.00173); the CSV keeps it whole."""
    params = [c in table.attrs.get("params", []) for c in table.columns]
    return [
        [_number_text(v) if param else _cell(v) for v, param in zip(row, params, strict=True)]
        for row in table.itertuples(index=False)
    ]


def _number_text(value: Any) -> str:
    text = _cell(value)
    try:
        int(text)
        return text  # a whole number stays whole (batch_size 20000, not 2e+04)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return f"{number:.4g}" if math.isfinite(number) else text


def _cell(value: Any) -> str:
    if _missing(value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return _first_line(value) if isinstance(value, str) else str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
