"""train@<run>: params.yaml runs.<run> + data/prepared/<dataset>/ -> models/<run>/, learning
curves in reports/plots/<run>/curves/, figures in reports/figures/<run>/training/, an MLflow run."""

from __future__ import annotations

from pathlib import Path

from deepfit.stages._cli import parser, stage


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__)
    cli.add_argument("--run", required=True, help="a name declared under runs:")
    args = cli.parse_args(argv)
    with stage(f"train@{args.run}") as log:
        from deepfit.config import load_params
        from deepfit.data import load_prepared

        params = load_params(args.params)  # validated before TensorFlow is imported
        run = params.run(args.run)
        data = load_prepared(Path("data/prepared") / run.dataset)  # checks the manifest hashes

        from deepfit.training import TrainOutputs, train_run

        summary = train_run(run, params, data, TrainOutputs.for_run(run.name))
        log.info(
            "%s: model saved to models/%s (MLflow run %s)",
            run.name,
            run.name,
            summary["mlflow_run_id"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
