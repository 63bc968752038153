"""`deepfit compare` on a small MLflow store built with MLflow's client (no TensorFlow)."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

from deepfit import cli
from deepfit.evaluate.metrics import key_metric_names
from deepfit.report import compare
from helpers import ROOT, free_port, stage_env

EXPERIMENT = "deepfit"

# MLflow run name (<run>@<dvc exp> inside an experiment), model, dataset, key metric value,
# activation, optimizer, learning rate.
RUNS = [
    ("fnn", "fnn", "digits", 0.95, "relu", "adam", 1e-3),
    ("fnn@exp-a", "fnn", "digits", 0.90, "relu", "sgd", 0.01),
    ("fnn@exp-b", "fnn", "digits", 0.97, "tanh", "adam", 1e-3),
    ("cnn@exp-a", "cnn", "digits", 0.98, "relu", "sgd", 0.01),
    ("rnn", "rnn", "sunspots", 20.0, "tanh", "adam", 1e-2),
    ("rnn@exp-b", "rnn", "sunspots", 17.0, "relu", "adam", 1e-2),
    ("rnn_adding", "rnn", "adding", 0.15, "tanh", "adam", 1e-2),
]
# Logged out of order: the table puts each study's parent first, then its runs by name.
STUDY_RUNS = [
    ("capacity/width_4", "width_4", "capacity"),
    ("fnn/trial-001", "tune:fnn/1", "tune:fnn"),
    ("study:capacity", "capacity", "capacity"),
    ("capacity/width_16", "width_16", "capacity"),
    ("capacity/width_128", "width_128", "capacity"),
    ("tune:fnn", "tune:fnn", "tune:fnn"),
    ("fnn/trial-000", "tune:fnn/0", "tune:fnn"),
]
STORED = len(RUNS) + 2 + len(STUDY_RUNS)  # with a failed and a killed run
KINDS = {"digits": "classification", "sunspots": "forecast", "adding": "regression"}
BASELINES = {"digits": 0.97, "sunspots": 18.0, "adding": 0.16}
ERROR = "FloatingPointError: training diverged: non-finite loss; lower the learning rate"


def _log_run(client, experiment_id, spec, start, status="FINISHED", epochs=3):
    """One run as the pipeline logs it; a run that did not finish has no evaluation."""
    from mlflow.entities import Metric, Param, RunTag

    name, model, dataset, value, activation, optimizer, lr = spec
    run, _, exp = name.partition("@")
    tags = {"deepfit.run": run, "deepfit.model": model, "deepfit.dataset": dataset}
    if exp:
        tags["dvc_exp_name"] = exp
    created = client.create_run(experiment_id, start_time=start, tags=tags, run_name=name)
    run_id = created.info.run_id
    params = {
        "arch.activation": activation,
        "train.optimizer.name": optimizer,
        "train.optimizer.learning_rate": lr,
        "arch.units": "16,8",
    }
    metrics = [
        Metric(key, 1.0 / (epoch + offset), start + epoch, epoch)
        for epoch in range(1, epochs + 1)
        for key, offset in (("loss", 0), ("val_loss", 1))
    ]
    metrics.append(Metric("train_seconds", 10.0 + start % 7, start, 0))
    run_tags = []
    if status == "FINISHED":
        key, base, _ = key_metric_names(KINDS[dataset])
        metrics += [Metric(key, value, start, 0), Metric(base, BASELINES[dataset], start, 0)]
        run_tags.append(RunTag("deepfit.evaluation", KINDS[dataset]))
    client.log_batch(
        run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()], tags=run_tags
    )
    client.set_terminated(run_id, status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    start = int(time.time() * 1000) - 100_000
    for index, spec in enumerate(RUNS):
        run_id = _log_run(client, experiment_id, spec, start + index * 1000)
        if spec[0] == "fnn@exp-b":
            client.set_tag(run_id, "deepfit.fit.verdict", "good fit")
    failed = ("fnn@exp-c", "fnn", "digits", None, "relu", "sgd", 10.0)
    run_id = _log_run(client, experiment_id, failed, start + 9000, "FAILED", epochs=1)
    client.set_tag(run_id, "deepfit.error", ERROR)
    killed = ("cnn@exp-d", "cnn", "digits", None, "relu", "adam", 1e-3)
    _log_run(client, experiment_id, killed, start + 9500, "KILLED", epochs=1)
    # A study's runs (hidden by default) and a search's: (name, deepfit.run, deepfit.study).
    for offset, (name, run, study) in enumerate(STUDY_RUNS):
        spec = (name, "fnn", "digits", 0.99, "tanh", "adam", 0.0017296005618143992)
        run_id = _log_run(client, experiment_id, spec, start + 9600 + 10 * offset)
        client.set_tag(run_id, "deepfit.run", run)
        client.set_tag(run_id, "deepfit.study", study)
    other = client.create_experiment("other")
    _log_run(client, other, RUNS[0], start)
    return uri


@pytest.fixture(scope="module")
def frame(store):
    return compare.load_runs(store, EXPERIMENT)


def table(frame, **options):
    return compare.compare_table(frame, compare.Options(**options))


def names(rows) -> list[str]:
    return list(rows["name"])


def run_cli(*args: str) -> int:
    return cli.main(["--params", "no-such-params.yaml", "compare", *args])


def test_table_has_names_key_metric_params_and_verdict(frame):
    rows = table(frame)
    assert len(rows) == len(RUNS) + 2  # no study variant, nor the other experiment's run
    assert list(rows.columns)[:13] == [
        "name",
        "model",
        "dataset",
        "status",
        "metric",
        "value",
        "ci95",
        "vs_best",
        "baseline",
        "activation",
        "optimizer",
        "lr",
        "fit",
    ]
    row = rows.set_index("name").loc["fnn@exp-b"]
    assert (row["exp"], row["run"], row["metric"]) == ("exp-b", "fnn", "test.accuracy")
    assert (row["value"], row["baseline"], row["fit"]) == (0.97, 0.97, "good fit")
    assert (row["activation"], row["optimizer"], row["lr"]) == ("tanh", "adam", "0.001")
    rnn = rows.set_index("name").loc["rnn"]
    assert (rnn["metric"], rnn["value"], rnn["baseline"]) == ("test.rmse", 20.0, 18.0)
    assert pd.isna(rows.set_index("name").loc["fnn", "exp"])  # a workspace run
    failed = rows.set_index("name").loc["fnn@exp-c"]
    assert failed["status"] == "FAILED" and pd.isna(failed["metric"])


def test_default_order_is_by_run_then_best_key_metric(frame):
    assert names(table(frame, runs=["fnn"])) == ["fnn@exp-b", "fnn", "fnn@exp-a", "fnn@exp-c"]
    assert names(table(frame, runs=["rnn"])) == ["rnn@exp-b", "rnn"]  # lower RMSE first


def test_filters_combine(frame):
    assert names(table(frame, runs=["fnn,cnn"], exps=["exp-a"])) == ["cnn@exp-a", "fnn@exp-a"]
    assert names(table(frame, models=["rnn"], datasets=["adding"])) == ["rnn_adding"]
    assert names(table(frame, exps=["workspace"])) == ["fnn", "rnn", "rnn_adding"]
    assert names(table(frame, exps=["exp-b", "exp-c"], models=["fnn"])) == [
        "fnn@exp-b",
        "fnn@exp-c",
    ]


def test_where_matches_params_and_tags_numbers_as_numbers(frame):
    tanh = table(frame, where=["arch.activation=tanh"])
    assert names(tanh) == ["fnn@exp-b", "rnn", "rnn_adding"]
    lr = table(frame, where=["train.optimizer.learning_rate=1e-3", "deepfit.model=fnn"])
    assert names(lr) == ["fnn@exp-b", "fnn"]
    assert names(table(frame, where=["deepfit.fit.verdict=good fit"])) == ["fnn@exp-b"]
    assert table(frame, where=["arch.activation=selu"]).empty


def test_sort_by_any_metric_or_param_with_direction(frame):
    asc = table(frame, sort="test.accuracy")
    assert names(asc)[:4] == ["fnn@exp-a", "fnn", "fnn@exp-b", "cnn@exp-a"]
    assert "test.accuracy" in asc.columns  # the sort metric is shown
    desc = table(frame, sort="test.accuracy", descending=True)
    assert names(desc)[:4] == ["cnn@exp-a", "fnn@exp-b", "fnn", "fnn@exp-a"]
    assert desc["test.accuracy"].iloc[4:].isna().all()  # runs without it come last
    by_lr = table(frame, sort="lr", descending=True, runs=["fnn"])
    assert list(by_lr["lr"]) == ["10.0", "0.01", "0.001", "0.001"]  # numeric, not text order


def test_best_per_model_answers_which_settings_worked_best(frame):
    best = table(frame, best_per="model")
    assert names(best) == ["cnn@exp-a", "fnn@exp-b", "rnn@exp-b", "rnn_adding"]
    # rnn on sunspots (RMSE) and on adding (MSE) are not comparable: one row each
    assert list(best.loc[best["model"] == "rnn", "dataset"]) == ["sunspots", "adding"]
    fnn = best.set_index("name").loc["fnn@exp-b"]
    assert (fnn["activation"], fnn["optimizer"]) == ("tanh", "adam")
    per_exp = table(frame, best_per="exp", models=["fnn"])
    assert names(per_exp) == ["fnn@exp-b", "fnn", "fnn@exp-a"]  # the failed exp-c has no score


def test_study_runs_only_on_request(frame):
    assert "capacity/width_4" not in names(table(frame))
    assert "capacity/width_4" not in names(table(frame, best_per="model"))
    with_studies = table(frame, studies=True, where=["deepfit.study=capacity"])
    assert names(with_studies) == [
        "study:capacity",
        "capacity/width_4",
        "capacity/width_16",
        "capacity/width_128",
    ]


def test_study_runs_stay_together_under_their_study(frame):
    rows = names(table(frame, studies=True, models=["fnn"], exps=["workspace"]))
    assert rows == [
        "study:capacity",
        "capacity/width_4",  # numbers in names by value
        "capacity/width_16",
        "capacity/width_128",
        "fnn",
        "tune:fnn",
        "fnn/trial-000",
        "fnn/trial-001",
    ]


def test_fractions_in_params_show_four_digits_and_csv_keeps_them(frame, tmp_path):
    rows = table(
        frame, studies=True, runs=["tune:fnn/0", "fnn"], exps=["workspace"], columns=["arch.units"]
    )
    text = compare.text_table(rows)
    assert "0.00173 " in text and "0.0017296" not in text
    assert "16,8" in text  # not a number: as logged
    assert " 0.001 " in text  # fnn's 1e-3, logged as 0.001
    assert "| 0.00173 |" in compare.markdown_table(rows)
    parsed = list(csv.DictReader(compare.write_table(rows, tmp_path / "t.csv", "csv").open()))
    assert {r["lr"] for r in parsed} == {"0.0017296005618143992", "0.001"}


def test_failed_lists_failed_and_killed_runs_with_their_error(frame):
    rows = compare.failed_table(frame, compare.Options())
    assert names(rows) == ["cnn@exp-d", "fnn@exp-c"]
    assert list(rows["status"]) == ["KILLED", "FAILED"]
    assert rows.set_index("name").loc["fnn@exp-c", "error"] == ERROR
    assert names(compare.failed_table(frame, compare.Options(runs=["cnn"]))) == ["cnn@exp-d"]


def test_text_table_aligns_and_hides_csv_only_columns(frame):
    text = compare.text_table(table(frame, runs=["fnn"]))
    header, rule, first, *_ = text.splitlines()
    assert header.split() == [*compare._SHOWN, "activation", "optimizer", "lr", "fit"]
    assert set(rule) <= {"-", " "} and first.startswith("fnn@exp-b ")
    assert "0.97" in first and "good fit" in first and "run_id" not in header
    # the interval and vs_best columns (issue: judgments) widened the table from 120 to ~130
    assert max(len(line) for line in text.splitlines()) <= 130


def test_markdown_and_csv_files(frame, tmp_path):
    rows = table(frame, runs=["fnn"], columns=["arch.units,train_seconds"])
    md = compare.write_table(rows, tmp_path / "out" / "table.md", "markdown").read_text()
    lines = md.splitlines()
    assert lines[0].startswith("| name | model | dataset | status | metric | value |")
    assert lines[0].endswith("| fit | arch.units | train_seconds |")
    assert "|---:|" in lines[1] and len(lines) == 2 + 4
    assert "| fnn@exp-b | fnn | digits | FINISHED | test.accuracy | 0.97 |  | best | 0.97 |" in md
    path = compare.write_table(rows, tmp_path / "table.csv", "csv")
    parsed = list(csv.DictReader(path.open()))
    assert [r["name"] for r in parsed] == names(rows)
    assert {"exp", "run", "run_id", "start", "arch.units"} <= set(parsed[0])
    assert parsed[0]["arch.units"] == "16,8" and float(parsed[0]["value"]) == 0.97
    assert len(parsed[0]["run_id"]) == 32 and parsed[1]["exp"] == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "table.csv"]  # no temp files


def test_curves_png_overlays_selected_runs(store, frame, tmp_path):
    rows = table(frame, runs=["fnn"])
    path = compare.curves_png(store, rows, "val_loss", tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]
    with pytest.raises(compare.CompareError, match="none of the 4 selected runs has a 'nope'"):
        compare.curves_png(store, rows, "nope", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_cli_prints_table_and_writes_files(store, tmp_path, capsys):
    md, csv_path, png = tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "c.png"
    code = run_cli(
        *("--tracking-uri", store, "--best-per", "model", "--markdown", str(md)),
        *("--csv", str(csv_path), "--curves", str(png), "--metric", "loss"),
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[2].startswith("cnn@exp-a ")
    assert f"4 of {STORED} runs, experiment 'deepfit'" in out
    assert "2 failed or killed: deepfit compare --failed" in out
    assert md.exists() and csv_path.exists() and png.exists()


def test_cli_failed_listing(store, capsys):
    assert run_cli("--tracking-uri", store, "--failed") == 0
    out = capsys.readouterr().out
    assert "fnn@exp-c" in out and ERROR in out and "KILLED" in out
    assert "fnn@exp-a" not in out


def test_cli_no_match_exits_1(store, capsys):
    assert run_cli("--tracking-uri", store, "--run", "lstm") == 1
    assert f"no run matches ({STORED} runs in experiment 'deepfit')" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--experiment", "nope"), "no experiment 'nope' in sqlite:"),
        (("--where", "arch.activation"), "--where 'arch.activation': expected KEY=VALUE"),
        (("--where", "no.such.key=1"), "unknown --where key 'no.such.key'"),
        (("--sort", "test.accuracyy"), "unknown sort metric 'test.accuracyy'"),
        (("--best-per", "colour"), "unknown --best-per key 'colour'"),
        (("--columns", "arch.unitz"), "unknown column 'arch.unitz'"),
    ],
)
def test_cli_errors_are_one_line_exit_2(store, capsys, args, message):
    assert run_cli("--tracking-uri", store, *args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepfit compare: error: ")
    assert message in lines[0]
    assert captured.out == ""


def test_cli_unreachable_stores_fail_fast(tmp_path, capsys):
    started = time.perf_counter()
    assert run_cli("--tracking-uri", f"http://127.0.0.1:{free_port()}") == 2
    assert time.perf_counter() - started < 15  # MLflow alone retries for minutes
    assert "cannot reach the MLflow server at http://127.0.0.1:" in capsys.readouterr().err
    missing = tmp_path / "mlflow.db"
    assert run_cli("--tracking-uri", f"sqlite:///{missing}") == 2
    assert f"no MLflow store at {missing}" in capsys.readouterr().err
    assert not missing.exists()


def test_default_store_and_experiment_come_from_the_repo(store, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text("stages: {}\n")
    params = (ROOT / "params.yaml").read_text().replace("experiment: deepfit", "experiment: other")
    (repo / "params.yaml").write_text(params)
    shutil.copy(store.removeprefix("sqlite:///"), repo / "mlflow.db")
    env = stage_env()
    done = subprocess.run(
        [sys.executable, "-m", "deepfit.cli", "compare"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert f"1 of 1 runs, experiment 'other', sqlite:///{repo / 'mlflow.db'}" in done.stdout


def test_help_and_validate_do_not_import_mlflow_or_pandas():
    code = (
        "import contextlib, io, sys\n"
        "from deepfit import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    cli.main(['compare', '--help'])\n"
        f"assert cli.main(['--params', {str(ROOT / 'params.yaml')!r}, 'validate']) == 0\n"
        "heavy = {'mlflow', 'pandas', 'matplotlib'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_runs_within_the_noise_of_the_best_are_marked():
    """Overlapping 95 % intervals: the difference to the best run is within the noise. A run
    scored on an older test split (the first, the best number) is not ranked with the others."""
    frame = pd.DataFrame(
        {
            "status": ["FINISHED"] * 5,
            "dataset": ["digits"] * 4 + ["sunspots"],
            "metric": ["test.accuracy"] * 4 + ["test.rmse"],
            "test_data": ["old", "new", "new", "new", "s"],
            "_rank": [-1.0, -0.99, -0.98, -0.90, 16.0],
            "start_time": [0, 1, 2, 3, 4],
            "_ci_low": [0.99, 0.975, 0.965, 0.87, 13.0],
            "_ci_high": [1.0, 0.997, 0.99, 0.93, 19.0],
        }
    )
    assert compare.within_noise(frame).tolist() == [
        "other data",
        "best",
        "within noise",
        "worse",
        "best",
    ]
    best = compare.best_per(frame.assign(model="fnn"), "model")
    assert best["test_data"].tolist() == ["old", "new", "s"]  # one row per test split


def test_promote_compares_runs_on_the_current_test_data_only(tmp_path):
    """A better metric on an older version of the data (another test-split digest) does not
    win: the champion is the best run evaluated on the newest run's test split."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.tracking import MlflowClient

    from deepfit.report import promote

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    start = int(time.time() * 1000) - 100_000
    runs = [  # (name, model, dataset, accuracy, ...), its test split's digest
        (("fnn", "fnn", "digits", 0.999, "relu", "adam", 1e-3), "old-split"),
        (("fnn@exp-a", "fnn", "digits", 0.995, "relu", "adam", 1e-3), "new-split"),
        (("fnn@exp-b", "fnn", "digits", 0.990, "tanh", "adam", 1e-3), "new-split"),
        (("rnn", "rnn", "sunspots", 17.0, "tanh", "adam", 1e-2), "its-split"),
    ]
    ids = {}
    for index, (spec, digest) in enumerate(runs):
        run_id = _log_run(client, experiment_id, spec, start + index * 1000)
        split = Dataset(name=spec[2], digest=digest, source_type="local", source="test.npz")
        context = InputTag(key="mlflow.data.context", value="testing")
        client.log_inputs(run_id, datasets=[DatasetInput(dataset=split, tags=[context])])
        ids[spec[0]] = run_id
    frame = compare.load_runs(uri, EXPERIMENT)
    assert sorted(frame["test_data"]) == ["its-split", "new-split", "new-split", "old-split"]
    chosen = promote.choose(frame)
    assert dict(zip(chosen["run"], chosen["run_id"], strict=True)) == {
        "fnn": ids["fnn@exp-a"],  # 0.995 on the new split, not 0.999 on the old one
        "rnn": ids["rnn"],
    }
    assert promote.choose(frame, run_id=ids["fnn"])["run_id"].tolist() == [ids["fnn"]]
