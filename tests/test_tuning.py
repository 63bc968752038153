"""Hyperparameter search: strict ``tuning:`` params, the pruning callback, and real searches
through the tune stage (outputs, MLflow child runs, failures, resume, two workers, --apply,
determinism)."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from deepfit.config import ConfigError, load_params, parse_params
from helpers import (
    ROOT,
    copy_tree,
    error_line,
    make_workdir,
    mlflow_client,
    real_params,
    run_stage,
    snapshot,
    stage_env,
    tiny_params,
    tiny_search,
    tool,
    write_params,
)

# --------------------------------------------------------------------------- params


@pytest.fixture
def raw() -> dict:
    return real_params()


def error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_default_search_resolves_and_every_trial_is_a_run():
    search = load_params().search("fnn")
    assert search.base.name == "fnn" and search.sampler == "tpe" and search.pruner == "median"
    assert search.metric == "val_loss" and search.direction == "minimize"
    assert set(search.space) == {"train.optimizer.learning_rate", "units", "dropout", "activation"}
    run = search.trial_run({"units": [128], "train.optimizer.learning_rate": 0.003})
    assert run.arch.units == [128] and run.train.optimizer.learning_rate == 0.003
    assert run.train.epochs == search.fixed["train.epochs"] <= 8


def test_validation_imports_neither_optuna_nor_tensorflow():
    check = (
        "import sys; from deepfit.config import load_params; load_params(); "
        "assert not {'optuna', 'tensorflow', 'keras'} & set(sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=stage_env(), timeout=60)
    assert done.returncode == 0


SPACE = "params.yaml: tuning.fnn.space"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda s: s["space"].update(width={"type": "int", "low": 8, "high": 64}),
            f"{SPACE}.width: not a key of run fnn (fnn on digits); keys: units, activation, ",
        ),
        (
            lambda s: s["space"]["dropout"].update(low=0.5, high=0.5),
            f"{SPACE}.dropout: low (0.5) must be below high (0.5)",
        ),
        (
            lambda s: s["space"]["train.optimizer.learning_rate"].update(low=0.0),
            f"{SPACE}.train.optimizer.learning_rate: log: true needs low > 0 (got low 0.0)",
        ),
        (
            lambda s: s["space"]["activation"].update(choices=[]),
            f"{SPACE}.activation.choices: expected a non-empty list of values to try",
        ),
        (
            lambda s: s["sampler"].update(name="cmaes"),
            "params.yaml: tuning.fnn.sampler.name: Input should be 'tpe', 'random' or 'grid' "
            "(got 'cmaes')",
        ),
        (
            lambda s: s.update(pruner="asha"),
            "params.yaml: tuning.fnn.pruner: Input should be 'median', 'hyperband' or 'none' "
            "(got 'asha')",
        ),
        (
            lambda s: (
                s["sampler"].update(name="grid"),
                s["space"].pop("train.optimizer.learning_rate"),
                s["space"]["dropout"].pop("step"),
            ),
            f"{SPACE}.dropout: sampler grid needs a step for a float range (or a categorical list)",
        ),
        (
            lambda s: s["space"]["dropout"].update(high=1.5),
            f"{SPACE}.dropout: 1.5 does not make a valid run: runs.fnn.dropout: ",
        ),
        (lambda s: s.update(metric="test_accuracy"), "params.yaml: tuning.fnn.metric: "),
        (lambda s: s.update(base="nope"), "params.yaml: tuning.fnn.base: no run 'nope'"),
    ],
)
def test_bad_search_is_one_line_naming_the_key(raw, edit, expected):
    edit(raw["tuning"]["fnn"])
    assert error_of(raw).startswith(expected)


def test_pruning_callback_reports_each_epoch_and_prunes():
    import optuna

    from deepfit.tune.pruning import PruningCallback

    class FakeTrial:
        def __init__(self) -> None:
            self.reported: list[tuple[float, int]] = []

        def report(self, value: float, step: int) -> None:
            self.reported.append((value, step))

        def should_prune(self) -> bool:
            return len(self.reported) >= 2

    trial = FakeTrial()
    callback = PruningCallback(trial, "val_loss")
    callback.on_train_begin()
    callback.on_epoch_end(0, {"loss": 1.0, "val_loss": 0.9})
    with pytest.raises(optuna.TrialPruned):
        callback.on_epoch_end(1, {"loss": 0.8, "val_loss": 0.95})
    assert trial.reported == [(0.9, 1), (0.95, 2)]
    assert callback.history == {"loss": [1.0, 0.8], "val_loss": [0.9, 0.95]}  # the pruned epoch too


# --------------------------------------------------------------------------- real searches

TUNE = "tune@tiny"


def search_dir(root: Path, prepared: Path, **search: object) -> Path:
    """A stage folder with digits prepared and one search `tiny` over the tiny run."""
    raw = tiny_params()
    raw["tuning"] = {"tiny": tiny_search(**search)}
    make_workdir(root, raw)
    copy_tree(prepared, root / "data" / "prepared" / "digits")
    return root


def study_trials(root: Path, name: str = "tiny") -> list:
    """The trials of the search's study in its default sqlite file; none before it exists."""
    import optuna

    from deepfit.tune.storage import open_storage

    db = root / ".dvc/tmp/deepfit/tuning" / f"{name}.db"
    if not db.exists():
        return []
    try:  # while the stage may still be writing the schema of the new file
        study = optuna.load_study(study_name=name, storage=open_storage(f"sqlite:///{db}"))
    except KeyError:  # the file is there, the study not yet
        return []
    return study.get_trials(deepcopy=False)


def interrupt_search(root: Path, *options: str, training: int) -> None:
    """`deepfit tune tiny` with ``options``: Ctrl-C once ``training`` trials have an epoch done;
    it must end as interrupted (exit 130, its one line last)."""
    search = subprocess.Popen(
        [tool("deepfit"), "tune", "tiny", *options],
        cwd=root,
        env=stage_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and search.poll() is None:
        time.sleep(0.2)
        if sum(1 for t in study_trials(root) if t.intermediate_values) == training:
            break
    search.send_signal(signal.SIGINT)
    _, err = search.communicate(timeout=120)
    assert search.returncode == 130, err[-3000:]
    assert err.rstrip().endswith("deepfit tune@tiny: interrupted (SIGINT)")


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, prepared_digits: Path) -> Path:
    """One real three-trial search through the stage."""
    root = search_dir(tmp_path_factory.mktemp("tune") / "work", prepared_digits)
    done = run_stage(root, "tune", "--search", "tiny")
    assert done.returncode == 0, done.stderr[-3000:]
    (root / "tune.log").write_text(done.stderr)
    return root


@pytest.mark.slow
def test_search_writes_report_figures_and_mlflow_children(searched):
    report = json.loads((searched / "reports/tuning/tiny.json").read_text())
    assert [t["number"] for t in report["trials"]] == [0, 1, 2]
    log = (searched / "tune.log").read_text()
    for trial in report["trials"]:  # a pruned epoch has no progress line: the trial's line says it
        ended = (
            f"pruned at epoch {trial['epochs']}"
            if trial["state"] == "pruned"
            else f"{trial['state']}, {trial['epochs']} epochs"
        )
        assert f"trial {trial['number']}: {ended}, val_loss " in log
    assert sum(report["counts"].values()) == 3 and report["best"]["value"] > 0
    for trial in report["trials"]:
        assert trial["state"] in ("complete", "pruned") and trial["duration"] > 0
        assert set(trial["params"]) == {"train.optimizer.learning_rate", "units"}
        assert trial["verdict"] in ("good", "underfit", "overfit", "diverged")
    assert report["best"]["apply"].startswith("dvc exp run -S ")
    assert "| trial | state | val_loss |" in (searched / "reports/tuning/tiny.md").read_text()
    for figure in ("history", "importance", "curves"):
        assert (searched / f"reports/figures/tuning/tiny/{figure}.png").stat().st_size > 5_000

    client = mlflow_client(searched)
    experiment = client.get_experiment_by_name("deepfit").experiment_id
    parent = client.search_runs([experiment], "tags.`deepfit.run` = 'tune:tiny'")[0]
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 3 and parent.info.status == "FINISHED"
    by_number = {int(c.data.tags["deepfit.trial"]): c for c in children}
    for trial in report["trials"]:
        child = by_number[trial["number"]]
        assert child.data.tags["deepfit.trial.state"] == trial["state"]
        assert child.data.tags["deepfit.fit.verdict"] == trial["verdict"]
        assert (
            json.loads(child.data.params["runs.tiny.units"].join("[]")) == trial["params"]["units"]
        )
        curve = client.get_metric_history(child.info.run_id, "val_loss")
        assert [m.step for m in curve] == list(range(1, trial["epochs"] + 1))


@pytest.mark.slow
def test_compare_studies_lists_the_trials_and_apply_prints_the_best(searched):
    env = stage_env()
    shown = subprocess.run(
        [tool("deepfit"), "compare", "--studies", "--where", "deepfit.tuning=tiny"],
        cwd=searched,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("tiny/trial-") == 3 and "tune:tiny" in shown.stdout
    hidden = subprocess.run(
        [tool("deepfit"), "compare"],
        cwd=searched,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "trial-" not in hidden.stdout  # trials are study runs: only with --studies
    best = json.loads((searched / "reports/tuning/tiny.json").read_text())["best"]
    apply = subprocess.run(
        [tool("deepfit"), "tune", "tiny", "--apply"],
        cwd=searched,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert apply.returncode == 0 and apply.stdout.strip() == best["apply"]
    units = best["params"]["units"]
    assert f"'++runs.tiny.units=[{', '.join(map(str, units))}]'" in apply.stdout


@pytest.mark.slow
def test_same_seed_one_worker_repeats_the_trials(searched, tmp_path, prepared_digits):
    again = search_dir(tmp_path / "again", prepared_digits)
    done = run_stage(again, "tune", "--search", "tiny")
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = (
        json.loads((r / "reports/tuning/tiny.json").read_text()) for r in (searched, again)
    )
    assert [(t["params"], t["state"]) for t in first["trials"]] == [
        (t["params"], t["state"]) for t in second["trials"]
    ]
    assert [t["value"] for t in first["trials"]] == pytest.approx(
        [t["value"] for t in second["trials"]], rel=1e-5
    )


@pytest.mark.slow
def test_a_failing_trial_is_failed_and_the_search_goes_on(tmp_path, prepared_digits):
    # Widths [16, 8] with two activations validate, and so does width [8] with one; width [8]
    # with two activations is a trial that raises (on the grid, one of four points).
    space = {
        "units": {"type": "categorical", "choices": [[16, 8], [8]]},
        "activation": {"type": "categorical", "choices": [["relu", "tanh"], "relu"]},
    }
    root = search_dir(
        tmp_path / "work", prepared_digits, trials=4, sampler={"name": "grid"}, pruner="none"
    )
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["runs"]["tiny"]["units"] = [16, 8]
    raw["tuning"]["tiny"]["space"] = space
    write_params(root, raw)
    done = run_stage(root, "tune", "--search", "tiny")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((root / "reports/tuning/tiny.json").read_text())
    failed = [t for t in report["trials"] if t["state"] == "failed"]
    assert [t["params"] for t in failed] == [{"units": [8], "activation": ["relu", "tanh"]}]
    assert "activation" in failed[0]["error"]
    assert report["counts"] == {"complete": 3, "pruned": 0, "failed": 1}
    client = mlflow_client(root)
    runs = client.search_runs([client.get_experiment_by_name("deepfit").experiment_id])
    assert sum(1 for r in runs if r.data.tags.get("deepfit.trial.state") == "complete") == 3


@pytest.mark.slow
def test_a_killed_search_resumes_without_losing_or_repeating_trials(tmp_path, prepared_digits):
    root = search_dir(tmp_path / "work", prepared_digits, trials=4)
    cmd = [sys.executable, "-m", "deepfit.stages.tune", "--search", "tiny"]
    worker = subprocess.Popen(
        cmd, cwd=root, env=stage_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        time.sleep(0.5)
        trials = study_trials(root)
        if any(t.state.name == "COMPLETE" for t in trials) and trials[-1].state.name == "RUNNING":
            break
    os.kill(worker.pid, signal.SIGKILL)  # kill -9 in the middle of a trial
    worker.wait()
    before = {t.number: t for t in study_trials(root) if t.state.name in ("COMPLETE", "PRUNED")}
    killed = [t for t in study_trials(root) if t.state.name == "RUNNING"]
    assert before and len(killed) == 1

    done = run_stage(root, "tune", "--search", "tiny")
    assert done.returncode == 0, done.stderr[-3000:]
    trials = study_trials(root)
    assert trials[killed[0].number].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retry) == 1 and retry[0].params == killed[0].params  # run again, same values
    for number, trial in before.items():  # finished trials stay as they were, not rerun
        assert trials[number].datetime_complete == trial.datetime_complete
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4 and len(trials) == 5
    report = json.loads((root / "reports/tuning/tiny.json").read_text())
    assert report["counts"]["failed"] == 1 and len(report["trials"]) == 5
    client = mlflow_client(root)
    runs = client.search_runs([client.get_experiment_by_name("deepfit").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]  # the killed ones closed KILLED
    killed_run = killed[0].user_attrs.get("deepfit.mlflow_run_id")
    if killed_run:  # killed after its MLflow run had started
        assert client.get_run(killed_run).info.status == "KILLED"


@pytest.mark.slow
def test_ctrl_c_fails_the_running_trial_and_queues_it_again(tmp_path, prepared_digits):
    """`deepfit tune` runs a one-worker search in its own process: Ctrl-C in the middle of a
    trial's training fails the trial, queues it again with the same values, ends its MLflow
    run KILLED and exits 130."""
    long_trials = {"fixed": {"train.epochs": 300}, "pruner": "none"}
    root = search_dir(tmp_path / "work", prepared_digits, trials=2, **long_trials)
    interrupt_search(root, training=1)
    trials = study_trials(root)
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[0].user_attrs["deepfit.error"] == "interrupted"
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params
    run = mlflow_client(root).get_run(trials[0].user_attrs["deepfit.mlflow_run_id"])
    assert run.info.status == "KILLED"


@pytest.mark.slow
def test_ctrl_c_with_two_workers_stops_both_and_queues_their_trials(tmp_path, prepared_digits):
    """`deepfit tune --workers 2` works in its own process beside one more: Ctrl-C (to it alone,
    the other runs in a session of its own) fails its trial and passes one SIGINT on, and the
    other worker fails its trial too. Each interrupted trial is queued again; none is lost."""
    long_trials = {"fixed": {"train.epochs": 3000}, "pruner": "none"}  # a minute or more
    root = search_dir(tmp_path / "work", prepared_digits, trials=2, **long_trials)
    interrupt_search(root, "--workers", "2", training=2)
    trials = study_trials(root)
    assert len({t.user_attrs["deepfit.pid"] for t in trials[:2]}) == 2
    failed = [t for t in trials if t.state.name == "FAIL"]
    queued = [t for t in trials if t.state.name == "WAITING"]
    assert len(failed) == 2 and all(t.user_attrs["deepfit.error"] == "interrupted" for t in failed)
    assert sorted(t.system_attrs["failed_trial"] for t in queued) == [t.number for t in failed]
    assert not [t for t in trials if t.state.name == "RUNNING"]


@pytest.mark.slow
def test_two_workers_share_one_study_and_keep_the_budget(tmp_path, prepared_digits):
    root = search_dir(tmp_path / "work", prepared_digits, trials=4)
    done = subprocess.run(
        [tool("deepfit"), "tune", "tiny", "--workers", "2"],
        cwd=root,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = study_trials(root)
    assert len(trials) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert len({t.user_attrs["deepfit.pid"] for t in trials}) == 2
    report = json.loads((root / "reports/tuning/tiny.json").read_text())
    assert len(report["trials"]) == 4
    client = mlflow_client(root)
    experiment = client.get_experiment_by_name("deepfit").experiment_id
    parent = client.search_runs([experiment], "tags.`deepfit.run` = 'tune:tiny'")[0]
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4  # the workers found the parent run the coordinator opened


def test_unreachable_storage_is_one_line_at_once_and_writes_nothing(tmp_path):
    root = make_workdir(tmp_path / "work", {**tiny_params(), "tuning": {"tiny": tiny_search()}})
    before = snapshot(root)
    started = time.monotonic()
    url = "postgresql://deepfit@127.0.0.1:9/deepfit"
    done = run_stage(root, "tune", "--search", "tiny", "--storage", url)
    assert time.monotonic() - started < 20  # Python start-up included; the check takes < 1 s
    assert done.returncode == 2
    assert error_line(done, TUNE) == (
        f"deepfit {TUNE}: error: --storage {url}: cannot reach 127.0.0.1:9 "
        "(Connection refused); start the database or check the URL"
    )
    assert snapshot(root) == before


def test_reachability_check_answers_within_about_a_second():
    from deepfit.tune import TuneError
    from deepfit.tune.storage import check_reachable

    started = time.monotonic()
    with pytest.raises(TuneError):
        check_reachable("postgresql://u@127.0.0.1:9/db")
    with pytest.raises(TuneError, match="folder /nonexistent does not exist"):
        check_reachable("sqlite:////nonexistent/study.db")
    assert time.monotonic() - started < 1.5


def test_processes_opening_a_new_database_at_once_all_get_the_storage(tmp_path):
    """Optuna writes its schema version on first open; two processes racing to write it must
    both end with a working storage, not an IntegrityError (seen in CI)."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    script = (
        "import sys; from deepfit.tune.storage import open_storage; "
        "open_storage(sys.argv[1]).get_all_studies(); print('ok')"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    assert [p.communicate(timeout=120)[0].strip() for p in procs] == ["ok"] * 6
    assert [p.returncode for p in procs] == [0] * 6


def test_bad_params_through_the_stage_write_nothing(tmp_path):
    raw = {**tiny_params(), "tuning": {"tiny": tiny_search()}}
    raw["tuning"]["tiny"]["space"]["units"]["choices"] = []
    root = make_workdir(tmp_path / "work", copy.deepcopy(raw))
    before = snapshot(root)
    done = run_stage(root, "tune", "--search", "tiny")
    assert done.returncode == 2
    assert error_line(done, TUNE) == (
        f"deepfit {TUNE}: error: params.yaml: tuning.tiny.space.units.choices: "
        "expected a non-empty list of values to try"
    )
    assert snapshot(root) == before
