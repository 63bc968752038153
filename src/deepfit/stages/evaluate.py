"""evaluate@<run>: models/<run>/ + data/prepared/<dataset>/ -> reports/metrics/<run>.json, plot
data in reports/plots/<run>/eval/, figures in reports/figures/<run>/evaluation/, into the run's
MLflow run."""

from __future__ import annotations

from pathlib import Path

from deepfit.stages._cli import deterministic_ops, parser, run_program, stage


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__)
    cli.add_argument("--run", required=True, help="a name declared under runs:")
    cli.add_argument("--scorer", default="models/_scorer", help="GAN scorer model folder")
    args = cli.parse_args(argv)
    # Not recorded as a failed experiment run: training's MLflow run exists and is reopened.
    with stage(f"evaluate@{args.run}") as log:
        from deepfit import tracking
        from deepfit.config import load_params
        from deepfit.data import load_prepared

        params = load_params(args.params)
        run = params.run(args.run)
        data = load_prepared(Path("data/prepared") / run.dataset)
        tracking.check_reachable()

        deterministic_ops()
        from deepfit.evaluate.run import EvalOutputs, evaluate_run

        out = EvalOutputs.for_run(run.name)
        evaluate_run(run, params, data, Path("models") / run.name, out, Path(), Path(args.scorer))
        log.info("%s: metrics in %s", run.name, out.metrics)
    return 0


if __name__ == "__main__":
    run_program(main)
