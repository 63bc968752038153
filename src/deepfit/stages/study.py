"""study@<study>: params.yaml studies.<study> + data/prepared/<dataset>/ ->
reports/studies/<study>.md and .csv, reports/figures/studies/<study>.png, and an MLflow parent
run with one child run per variant."""

from __future__ import annotations

from pathlib import Path

from deepfit.stages._cli import deterministic_ops, parser, run_program, stage


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__)
    cli.add_argument("--study", required=True, help="a name declared under studies:")
    args = cli.parse_args(argv)
    with stage(f"study@{args.study}") as log:
        from deepfit.config import load_params
        from deepfit.data import load_prepared

        params = load_params(args.params)  # validated before TensorFlow is imported
        study = params.study(args.study)
        data = load_prepared(Path("data/prepared") / study.dataset)

        from deepfit.study.run import StudyOutputs, run_study

        deterministic_ops()

        out = StudyOutputs.for_study(study.name)
        points = run_study(study, params, data, out)
        verdicts = ", ".join(f"{p['variant']} {p['verdict']}" for p in points)
        log.info("%s: %s; table in %s", study.name, verdicts, out.table)
    return 0


if __name__ == "__main__":
    run_program(main)
