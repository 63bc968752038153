"""The benchmark's bookkeeping on fake measurements: groups, row order, new output files, report.

Nothing here trains or runs DVC; the groups that only read outputs get hand-written ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from deepfit.outputs import markdown_table
from helpers import ROOT

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from bench import (
    EPOCH_LINE,
    GROUPS,
    Bench,
    Group,
    Sizes,
    bench_params,
    complete,
    epochs_of,
    logging_rows,
    make_table,
    measure,
    quality_rows,
    row,
    row_order,
    steady_rate,
    write_report,
)


def write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_row_ids_are_unique_across_groups() -> None:
    ids = [rid for group in GROUPS for rid in group.ids]
    assert len(ids) == len(set(ids))
    assert {"P1", "P1b", "P5", "Q2", "Q3", "M1"} <= set(ids)


def test_rows_come_in_report_order_and_unmeasured_ones_fail() -> None:
    groups = [Group(("Q3", "P1b"), quality_rows), Group(("P10", "P2", "P1", "M1"), logging_rows)]
    rows = complete([row("Q3", "q", "", 1.0, True), row("P10", "p", "", 1.0, True)], groups)
    assert [r["id"] for r in rows] == ["M1", "P1", "P1b", "P2", "P10", "Q3"]
    assert [r["met"] for r in rows] == [False, False, False, False, True, True]


def test_a_new_group_is_one_function_and_a_failure_keeps_earlier_rows(tmp_path: Path) -> None:
    def judgment_rows(bench: Bench) -> tuple[list[dict[str, Any]], dict[str, str]]:
        return [row("J1", "judged", "all", "all", True)], {"J1": "table"}

    def broken_rows(bench: Bench) -> tuple[list[dict[str, Any]], dict[str, str]]:
        raise RuntimeError("dvc repro failed")

    groups = [Group(("J1",), judgment_rows), Group(("J2",), broken_rows)]
    rows, details = measure(Bench(tmp_path, 1, 1, [7]), groups)
    assert [r["id"] for r in rows] == ["J1"]
    assert details["J1"] == "table"
    assert "RuntimeError: dvc repro failed" in details["The benchmark stopped early"]
    assert [r["id"] for r in complete(rows, groups)] == ["J1", "J2"]


def test_quality_rows_read_baselines_from_the_evidence_files(tmp_path: Path) -> None:
    bench = Bench(tmp_path, 1, 1, [7])
    reports = bench.cold_reports
    write(reports / "metrics" / "lstm.json", {"test": {"rmse": 9.0}})
    write(reports / "evidence" / "lstm.json", {"baselines": {"ar": {"rmse": 10.0}}})
    write(reports / "metrics" / "lstm_adding.json", {"test": {"mse": 0.001}})
    write(reports / "metrics" / "rnn_adding.json", {"test": {"mse": 0.2}})
    write(reports / "evidence" / "gan.json", {"test": {"fid": 6.0, "classes_covered": 10}})
    bench.repo.mkdir(parents=True)
    (bench.repo / "params.yaml").write_text("datasets: {adding: {length: 50}}\n")
    rows, _ = quality_rows(bench)
    q3, q4, q5 = rows
    assert (q3["value"], q3["ar_rmse"], q3["met"]) == (0.9, 10.0, True)
    assert q4["measure"].startswith("adding problem, length 50") and q4["met"]
    assert q5["value"] == "6; 10 of 10" and q5["met"]


def test_m1_is_the_median_share_of_the_cnn_fit_in_mlflow_logging(tmp_path: Path) -> None:
    bench = Bench(tmp_path, 1, 1, [7, 8, 9])
    fits = [(0.05, 10.0), (0.3, 10.0), (0.08, 10.0)]  # 0.5 %, 3 %, 0.8 %
    bench._seed_runs = {
        "cnn": [{"pipeline": {"mlflow_epoch_logging_seconds": s, "seconds": t}} for s, t in fits]
    }
    (m1,), _ = logging_rows(bench)
    assert (m1["id"], m1["target"], m1["unit"]) == ("M1", "<= 1 %", "%")
    assert m1["value"]["median"] == 0.8
    assert (m1["value"]["min"], m1["value"]["max"]) == (0.5, 3.0)
    assert m1["met"] is True


def test_report_files(tmp_path: Path) -> None:
    machine = {
        "cpu": "CPU",
        "cores": 2,
        "memory_gib": 8.0,
        "python": "3.11",
        "versions": {"keras": "3"},
        "commit": "abc1234",
        "load_average_at_start": [0.5, 0.25, 0.0],
        "date": "2026-12-03 08:00 UTC",
    }
    seconds = {"median": 0.4, "min": 0.3, "max": 0.5, "n": 3, "values": [0.4, 0.3, 0.5]}
    rows = complete([row("L1", "`deepfit --help`", "<= 0.5 s", seconds, True, "s")])
    details = {"P5: stages": markdown_table(["stage", "seconds"], "ll", [["prepare", "2.1"]])}
    result = {"machine": machine, "seconds": 12.0, "rows": rows, "details": details}
    text = write_report(result, tmp_path / "reports" / "benchmarks")
    assert (tmp_path / "reports" / "benchmarks.md").read_text() == text
    assert json.loads((tmp_path / "reports" / "benchmarks.json").read_text()) == result
    lines = text.splitlines()
    header = lines.index("| id | measure | target | measured | status |")
    assert lines[header + 1] == "|---|---|---|---|---|"
    first = min((rid for group in GROUPS for rid in group.ids), key=row_order)  # D2 today
    assert lines[header + 2].startswith(f"| {first} | not measured")  # by letter, then number
    assert "| L1 | `deepfit --help` | <= 0.5 s | 0.4 s (0.3 s–0.5 s, n=3) | met |" in lines
    assert "| M1 | not measured: the benchmark stopped early |  |  | **not met** |" in lines
    assert text.endswith("## P5: stages\n\n| stage | seconds |\n|---|---|\n| prepare | 2.1 |\n")


def test_steady_state_rate_leaves_out_the_first_epoch() -> None:
    # deepfit's progress line (EpochProgress), as the train stage prints it
    out = "Epoch 1/3: 5.00 s - loss 2.3\nnoise\nEpoch 2/3: 1.00 s - loss 1\nEpoch 3/3: 3.00 s\n"
    seconds = [float(s) for _, s in EPOCH_LINE.findall(out)]
    assert seconds == [5.0, 1.0, 3.0]
    assert steady_rate(100, seconds) == 100 * 2 / 4
    with pytest.raises(ValueError, match="at least 2 epochs"):
        steady_rate(100, [5.0])


def test_the_data_rows_params_validate(tmp_path: Path) -> None:
    """D1's image folder and D4's table, declared as bench_params declares them, pass deepfit's
    own validation; the small-size options cap the epochs and turn early stopping off."""
    from deepfit.config import load_params

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    bench = Bench(tmp_path, 1, 1, [7], Sizes(max_epochs=2))
    table = {"source": "csv", "path": "t.csv", "target": "label", "task": "classification"}
    pics = {"source": "images", "path": "pics", "image_size": [32, 32]}
    runs = {"d1": ("cnn", {"dataset": "pics", "train": epochs_of(bench, 4)})}
    runs["d4"] = ("fnn", {"dataset": "table", "train": epochs_of(bench, 10)})
    bench_params(tmp_path, {"pics": pics, "table": {**table, "missing": "impute"}}, runs)
    params = load_params(tmp_path / "params.yaml")
    assert params.run("d1").model == "cnn" and params.run("d1").train.epochs == 2
    assert params.run("d4").train.epochs == 2
    assert not params.run("d4").train.early_stopping.enabled
    assert params.run("cnn").train.epochs == 60  # the base run is untouched


def test_d4s_table_has_20_mixed_columns_and_missing_cells(tmp_path: Path) -> None:
    import pandas as pd

    from deepfit.data.tables import column_kind

    make_table(tmp_path / "t.csv", 400)
    frame = pd.read_csv(tmp_path / "t.csv")
    features = frame.drop(columns="label")
    assert features.shape == (400, 20)
    kinds = [column_kind(features[c], c, tmp_path / "t.csv") for c in features]
    assert kinds == ["numeric"] * 12 + ["categorical"] * 5 + ["boolean"] * 3
    assert frame["n0"].isna().sum() == 2 and features.drop(columns="n0").notna().all().all()
    assert sorted(frame["label"].unique()) == [0, 1, 2]
