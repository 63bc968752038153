"""The ``deepfit`` command: check params.yaml, list what the pipeline will run, compare runs,
judge the fit of a training history."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from deepfit.config import ConfigError, FitConfig, load_params

COMPARE_HELP = """\
One table over the MLflow runs of the workspace and of DVC experiments: key test metric with
its 95 % interval beside its baseline, chosen params, fit verdict, and vs_best (best, within
noise, worse; "other data" for runs scored on an earlier test split). Rows are ordered by run,
best key metric first.
Examples:
  deepfit compare --best-per model          best activation/optimizer per architecture
  deepfit compare --run fnn --sort test.accuracy --desc --columns train.epochs
  deepfit compare --where arch.activation=tanh --curves curves.png --metric val_loss
  deepfit compare --failed                  failed or killed runs with their error
Exit status: 0 with rows, 1 when no run matches, 2 on an error."""


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="deepfit", description=__doc__)
    cli.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    commands = cli.add_subparsers(dest="command", required=True)
    commands.add_parser("validate", help="validate params.yaml and list datasets and runs")
    _add_compare(commands)
    _add_diagnose(commands)
    _add_server(commands)
    _add_promote(commands)
    _add_tune(commands)
    args = cli.parse_args(argv)
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # The reader of stdout went away (`deepfit diagnose ... | head`): stop quietly, and
        # keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "promote":
        return _promote(args)
    if args.command == "server":
        return _server(args)
    if args.command == "tune":
        return _tune(args)
    if args.command == "compare":
        return _compare(args)
    if args.command == "diagnose":
        return _diagnose(args)
    return _validate(args)


def _validate(args: argparse.Namespace) -> int:
    try:
        params = load_params(args.params)
    except ConfigError as exc:
        print(f"deepfit: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.params}: valid")
    print(f"datasets: {', '.join(params.datasets)}")
    for name, run in params.runs.items():
        opt = run.train.optimizer
        print(
            f"run {name}: {run.model} on {run.dataset}, {run.train.epochs} epochs, "
            f"{opt.name} lr={opt.learning_rate:g}"
        )
    for name, search in params.tuning.items():
        print(
            f"search {name}: {search.trials} trials of {search.base.name} over "
            f"{', '.join(search.space)} ({search.sampler}, {search.pruner} pruning)"
        )
    return 0


def _add_compare(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser(
        "compare",
        help="compare MLflow runs across DVC experiments",
        description=COMPARE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    store = cmd.add_argument_group("store")
    store.add_argument(
        "--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or <repo>/mlflow.db)"
    )
    store.add_argument(
        "--experiment", help="MLflow experiment (default: mlflow.experiment in params, deepfit)"
    )
    pick = cmd.add_argument_group("selection (repeat a flag or separate values by commas)")
    pick.add_argument("--run", action="append", default=[], help="deepfit run name, e.g. fnn")
    pick.add_argument("--model", action="append", default=[], help="architecture, e.g. cnn")
    pick.add_argument("--dataset", action="append", default=[], help="dataset, e.g. digits")
    pick.add_argument(
        "--exp", action="append", default=[], help="DVC experiment name; 'workspace' for none"
    )
    pick.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="param or tag value, e.g. train.optimizer.name=sgd (numbers compare as numbers)",
    )
    pick.add_argument(
        "--best-per",
        metavar="KEY",
        help="one row per KEY (model, run, dataset, exp, a param): the best finished run by "
        "its key metric, per dataset",
    )
    pick.add_argument("--failed", action="store_true", help="list FAILED/KILLED runs and errors")
    pick.add_argument(
        "--studies", action="store_true", help="include the runs of studies (left out by default)"
    )
    view = cmd.add_argument_group("view")
    view.add_argument("--sort", metavar="METRIC", help="sort by a metric (or any column)")
    view.add_argument("--desc", action="store_true", help="sort descending (largest first)")
    view.add_argument(
        "--columns",
        action="append",
        default=[],
        metavar="KEYS",
        help="extra params, metrics or tags, comma-separated, e.g. arch.units,test.f1_macro",
    )
    out = cmd.add_argument_group("output files (written atomically)")
    out.add_argument("--markdown", type=Path, metavar="FILE", help="the table as markdown")
    out.add_argument("--csv", type=Path, metavar="FILE", help="the table as CSV, every column")
    out.add_argument("--curves", type=Path, metavar="PNG", help="overlay per-epoch curves")
    out.add_argument(
        "--metric", default="val_loss", help="metric drawn by --curves (default: %(default)s)"
    )


def _compare(args: argparse.Namespace) -> int:
    # pandas, MLflow and matplotlib load only here, so --help and validate stay fast.
    from deepfit import tracking
    from deepfit.report import compare

    try:
        uri = args.tracking_uri or tracking.tracking_uri()
        experiment = args.experiment or _experiment(Path(args.params))
        runs = compare.load_runs(uri, experiment)
        options = compare.Options(
            runs=args.run,
            models=args.model,
            datasets=args.dataset,
            exps=args.exp,
            where=args.where,
            sort=args.sort,
            descending=args.desc,
            best_per=args.best_per,
            columns=args.columns,
            studies=args.studies,
        )
        if args.failed:
            table = compare.failed_table(runs, options)
        else:
            table = compare.compare_table(runs, options)
        if table.empty:
            print(f"no run matches ({len(runs)} runs in experiment {experiment!r})")
            return 1
        print(compare.text_table(table), end="")
        failed = compare.failed_table(runs, compare.Options(studies=args.studies))
        print(_footer(len(runs), len(table), len(failed), experiment, uri, args.failed))
        for path, fmt in ((args.markdown, "markdown"), (args.csv, "csv")):
            if path:
                print(f"wrote {compare.write_table(table, path, fmt)}")
        if args.curves:
            print(f"wrote {compare.curves_png(uri, table, args.metric, args.curves)}")
    except (compare.CompareError, ConfigError) as exc:
        print(f"deepfit compare: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _experiment(params_file: Path) -> str:
    if not params_file.exists():
        return "deepfit"
    return load_params(params_file).mlflow.experiment


def _footer(n_runs: int, shown: int, failed: int, experiment: str, uri: str, listing: bool) -> str:
    text = f"{shown} of {n_runs} runs, experiment {experiment!r}, {uri}"
    if failed and not listing:
        text += f"; {failed} failed or killed: deepfit compare --failed"
    return text


DIAGNOSE_HELP = """\
Judge a training history: diverged, overfit, underfit or good, with the numbers that decided
it (rules: README, "Reading the fit"; thresholds: fit: in --params when that file exists).
PATH is a Keras CSVLogger file (epoch,loss,val_loss,...) or a history JSON ({"loss": [...]}).
Skill rules need the constant predictor's loss: --classes N (ln N, a uniform guess over N
classes) or --reference-loss X; without either only the curves are judged.
Exit status: 0 with a verdict, 2 on an error."""


def _add_diagnose(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser(
        "diagnose",
        help="judge the fit of a Keras CSVLogger file or history JSON",
        description=DIAGNOSE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Usage mistakes are one line on stderr, like every other diagnose error.
    cmd.error = lambda message: _diagnose_error(message)  # type: ignore[method-assign]
    cmd.add_argument("path", type=Path, metavar="PATH", help="CSVLogger file or history JSON")
    reference = cmd.add_mutually_exclusive_group()
    reference.add_argument(
        "--classes", type=int, metavar="N", help="classification with N classes: reference ln N"
    )
    reference.add_argument(
        "--reference-loss", type=float, metavar="X", help="the constant predictor's loss"
    )
    cmd.add_argument("--json", action="store_true", help="print one JSON object")
    cmd.add_argument("--figure", type=Path, metavar="PNG", help="write the learning curves")


def _diagnose_error(message: str) -> NoReturn:
    print(f"deepfit diagnose: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _diagnose(args: argparse.Namespace) -> int:
    # numpy and matplotlib load only here, so --help and validate stay fast.
    from deepfit.evaluate import diagnosis

    if args.classes is not None and args.classes < 2:
        _diagnose_error(f"--classes: expected at least 2 classes, not {args.classes}")
    if args.reference_loss is not None and not args.reference_loss > 0:
        _diagnose_error(f"--reference-loss: expected a positive loss, not {args.reference_loss}")
    reference = None
    if args.classes is not None:
        reference = (math.log(args.classes),) * 2
    elif args.reference_loss is not None:
        reference = (args.reference_loss,) * 2
    try:
        fit_cfg = load_params(args.params).fit if Path(args.params).exists() else FitConfig()
        history = diagnosis.read_history(args.path)
        generative = "loss" not in history
        fit = diagnosis.diagnose(history, fit_cfg, reference, generative, _metric(history))
    except (ConfigError, ValueError) as exc:
        _diagnose_error(str(exc))
    written = None
    if args.figure:  # first: a reader that stops reading (| head) does not lose it
        try:
            title = (
                f"{args.path.parent.name}/{args.path.name}"
                if args.path.parent.name
                else args.path.name
            )
            written = diagnosis.fit_figure(history, fit, fit_cfg, args.figure, title)
        except OSError as exc:
            _diagnose_error(f"{args.figure}: cannot write the figure ({exc.strerror})")
    if args.json:
        print(json.dumps({k: _finite_or_none(v) for k, v in fit.items()}))
    else:
        print(f"{args.path}: {fit['verdict']}")
        print(f"reasons: {fit['reasons']}")
        for key, value in fit.items():
            if key not in ("verdict", "reasons"):
                print(f"  {key}: {_number(value)}")
    if written is not None:
        print(f"wrote {written}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _metric(history: dict[str, list[float]]) -> str | None:
    return next((m for m in ("accuracy", "mae") if m in history and f"val_{m}" in history), None)


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


SERVER_HELP = """\
A tracking server for a team, on 127.0.0.1 only: `mlflow server` with proxied artifacts over
the repository's sqlite store (--db sqlite, the default), over a PostgreSQL cluster that deepfit
creates and runs under .dvc/tmp/deepfit/postgres/ (--db postgres; needs initdb and pg_ctl), or
over an existing PostgreSQL (--database-url). The database password is generated and kept in
.dvc/tmp/deepfit/pgpass (mode 0600); it is never printed. Foreground by default (Ctrl-C stops
everything); --detach returns once the server answers, and `deepfit server stop` stops it.
Log to it with MLFLOW_TRACKING_URI=http://127.0.0.1:PORT.
Exit status: 0 when started or stopped, 1 when stop finds nothing running, 2 on an error."""


def _add_server(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser(
        "server",
        help="start (or stop) MLflow's tracking server, with PostgreSQL if asked",
        description=SERVER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.error = lambda message: _server_error(message)  # type: ignore[method-assign]
    cmd.add_argument("action", nargs="?", choices=("start", "stop"), default="start")
    cmd.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    cmd.add_argument("--database-url", metavar="URL", help="an existing postgresql://... server")
    cmd.add_argument("--port", type=int, default=5000, help="MLflow's port (default: %(default)s)")
    cmd.add_argument(
        "--artifacts", metavar="DEST", help="folder or s3://bucket/prefix (default: mlartifacts/)"
    )
    cmd.add_argument("--workers", type=int, default=2, help="MLflow workers (default: %(default)s)")
    cmd.add_argument("--detach", action="store_true", help="return once the server answers")


def _server_error(message: str) -> NoReturn:
    print(f"deepfit server: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _server(args: argparse.Namespace) -> int:
    # the server module loads only here; it starts processes but imports neither MLflow nor TF
    import logging

    from deepfit import server

    logging.basicConfig(level=logging.INFO, format="deepfit server: %(message)s")
    if args.action == "stop":
        state = server.stop()
        print(f"stopped {state['url']}" if state else "no deepfit server runs here")
        return 0 if state else 1
    if not 0 < args.port < 65536:
        _server_error(f"--port: expected 1-65535, not {args.port}")
    options = server.Options(
        db="postgres" if args.database_url else args.db,
        port=args.port,
        database_url=args.database_url,
        artifacts=args.artifacts,
        workers=args.workers,
    )
    try:
        state = server.start(options)
    except server.ServerError as exc:
        _server_error(str(exc))
    print(
        f"MLflow server on {state['url']} ({_store_name(state)}, artifacts: {state['artifacts']})"
    )
    print(f"log to it: export MLFLOW_TRACKING_URI={state['url']}")
    if state.get("studies"):
        print(f"share a search's study: deepfit tune NAME --storage {state['studies']}")
    if args.detach:
        print("stop it: deepfit server stop")
        return 0
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or SIGTERM: stop what we started
        server.wait(state)
    server.stop()
    print(f"stopped {state['url']}")
    return 0


def _store_name(state: dict[str, Any]) -> str:
    backend = state["backend"]
    return (
        "sqlite " + backend.removeprefix("sqlite:///")
        if backend.startswith("sqlite")
        else ("PostgreSQL " + backend.split("@", 1)[1])
    )


PROMOTE_HELP = """\
Register a run's logged MLflow model in the model registry as deepfit-<run> and point the alias
'champion' at it: by default the best finished run of every run name by its key test metric
(the direction of KEY_METRICS: accuracy up, RMSE/MSE/FID down), or the best of --run NAME, or
exactly --run-id ID. The model version's tags carry the evidence: key metric and value, the
strongest baseline and its value, baseline and fit verdicts, DVC experiment, git commit.
Serve it: mlflow models serve -m models:/deepfit-<run>@champion --env-manager local -h 127.0.0.1
Exit status: 0 when promoted (or already champion), 2 on an error."""


def _add_promote(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser(
        "promote",
        help="register the best (or a given) run's model as deepfit-<run>@champion",
        description=PROMOTE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.error = lambda message: _promote_error(message)  # type: ignore[method-assign]
    which = cmd.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="NAME", help="deepfit run name, e.g. fnn")
    which.add_argument("--run-id", metavar="ID", help="one MLflow run id")
    cmd.add_argument(
        "--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or <repo>/mlflow.db)"
    )
    cmd.add_argument(
        "--experiment", help="MLflow experiment (default: mlflow.experiment in params, deepfit)"
    )


def _promote_error(message: str) -> NoReturn:
    print(f"deepfit promote: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _promote(args: argparse.Namespace) -> int:
    # pandas and MLflow load only here, so --help stays fast.
    from deepfit import tracking
    from deepfit.report import promote

    try:
        uri = args.tracking_uri or tracking.tracking_uri()
        experiment = args.experiment or _experiment(Path(args.params))
        done = promote.promote(uri, experiment, run=args.run, run_id=args.run_id)
    except (promote.CompareError, ConfigError) as exc:
        _promote_error(str(exc))
    for item in done:
        tags = item.tags
        state = "registered" if item.new else "already champion:"
        print(
            f"{state} {item.model} version {item.version} @{promote.ALIAS} <- {item.run_name} "
            f"(run {item.run_id}): {tags['deepfit.metric']} {_short(tags['deepfit.metric.value'])}"
            f", {tags['deepfit.baseline'] or 'baseline'} {_short(tags['deepfit.baseline.value'])}"
            f" ({tags['deepfit.baseline.verdict'] or 'no verdict'}), fit "
            f"{tags['deepfit.fit.verdict'] or 'n/a'}"
        )
    print(
        f"serve: mlflow models serve -m models:/{done[0].model}@{promote.ALIAS} "
        "--env-manager local -h 127.0.0.1 -p 5001"
    )
    return 0


def _short(value: str) -> str:
    return f"{float(value):.4g}" if value else "n/a"


TUNE_HELP = """\
Run the search tuning.NAME of params.yaml: an Optuna study whose trials are the base run with
sampled values, pruned on their validation curve, each an MLflow child run of `tune:NAME`.
The study lives in a database (default: .dvc/tmp/deepfit/tuning/NAME.db); a rerun continues an
interrupted study. Reports: reports/tuning/NAME.json and .md, reports/figures/tuning/NAME/.
Examples:
  deepfit tune fnn --workers 2             two worker processes on this machine
  deepfit tune fnn --storage postgresql://user@host/db           start a shared study
  deepfit tune fnn --storage postgresql://user@host/db --join    add a machine's workers
  deepfit tune fnn --apply [--run]         print (or run) the best trial's `dvc exp run -S ...`
Exit status: 0 when done, 2 on an error, 130 when interrupted."""


def _add_tune(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser(
        "tune",
        help="run a hyperparameter search (tuning: in params.yaml)",
        description=TUNE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("name", help="a search declared under tuning:")
    cmd.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    cmd.add_argument(
        "--storage", metavar="URL", help="study database (sqlite:///… or postgresql://…)"
    )
    cmd.add_argument("--join", action="store_true", help="add trials to an existing study")
    cmd.add_argument("--apply", action="store_true", help="print the best trial's dvc exp run")
    cmd.add_argument("--run", action="store_true", help="with --apply: run that experiment")


def _tune(args: argparse.Namespace) -> int:
    if args.run and not args.apply:
        print("deepfit tune: error: --run goes with --apply", file=sys.stderr)
        return 2
    if not args.apply:
        from deepfit.stages import tune

        argv = ["--params", args.params, "--search", args.name, "--workers", str(args.workers)]
        argv += ["--storage", args.storage] if args.storage else []
        return tune.main(argv + (["--join"] if args.join else []))
    import shlex
    import subprocess

    try:
        command = _best_command(args.params, args.name)
    except ConfigError as exc:
        print(f"deepfit tune: error: {exc}", file=sys.stderr)
        return 2
    print(" ".join(shlex.quote(part) for part in command))
    return subprocess.run(command).returncode if args.run else 0


def _best_command(params_file: str, name: str) -> list[str]:
    """The best trial's ``dvc exp run -S ...`` from the search's report."""
    from deepfit.tune.report import apply_command

    search = load_params(params_file).search(name)
    path = Path("reports") / "tuning" / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no report yet; run `deepfit tune {name}` or `dvc repro`")
    best = json.loads(path.read_text())["best"]
    if best is None:
        raise ConfigError(f"{path}: no trial of search {name} completed")
    return apply_command(search.base.name, best)


def entry() -> NoReturn:
    """The ``deepfit`` console script: ``main`` as a program. An interrupted ``deepfit tune``
    runs its search in this process and exits as an interrupted stage does."""
    from deepfit.stages._cli import run_program

    run_program(main)


if __name__ == "__main__":
    entry()
