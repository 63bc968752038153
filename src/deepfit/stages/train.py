"""train@<run>: params.yaml runs.<run> + data/prepared/<dataset>/ -> models/<run>/, learning
curves in reports/plots/<run>/curves/, figures in reports/figures/<run>/training/, an MLflow run.

A killed attempt resumes after its last completed epoch (see deepfit.train.resume)."""

from __future__ import annotations

from pathlib import Path

from deepfit.stages._cli import deterministic_ops, parser, run_program, stage


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__)
    cli.add_argument("--run", required=True, help="a name declared under runs:")
    args = cli.parse_args(argv)
    with stage(f"train@{args.run}", runs=[args.run], params=args.params) as log:
        from deepfit import tracking
        from deepfit.config import load_params
        from deepfit.data import check_batch_size, load_prepared

        params = load_params(args.params)  # validated before TensorFlow is imported
        run = params.run(args.run)
        data = load_prepared(Path("data/prepared") / run.dataset)  # checks the manifest hashes
        shared = run.train.batch_size == params.train.batch_size
        key = "train.batch_size" if shared else f"runs.{run.name}.train.batch_size"
        check_batch_size(data, run.train.batch_size, key)
        tracking.check_reachable()  # seconds, before any training, if a server is down

        deterministic_ops()
        from deepfit.train.run import TrainOutputs, train_run

        summary = train_run(run, params, data, TrainOutputs.for_run(run.name))
        log.info(
            "%s: model saved to models/%s (MLflow run %s)",
            run.name,
            run.name,
            summary["mlflow_run_id"],
        )
    return 0


if __name__ == "__main__":
    run_program(main)
