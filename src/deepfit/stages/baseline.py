"""baseline@<dataset>: params.yaml baselines + data/prepared/<dataset>/ ->
reports/baselines/<dataset>.json and models/baselines/<dataset>/ (test predictions)."""

from __future__ import annotations

from pathlib import Path

from deepfit.stages._cli import parser, run_program, stage


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__)
    cli.add_argument("--dataset", required=True, help="a name declared under datasets:")
    args = cli.parse_args(argv)
    with stage(f"baseline@{args.dataset}") as log:
        from deepfit.config import load_params
        from deepfit.data import load_prepared
        from deepfit.evaluate.baseline_run import BaselineOutputs, family_of, run_baselines

        params = load_params(args.params)
        cfg = params.dataset(args.dataset)
        data = load_prepared(Path("data/prepared") / args.dataset)
        out = BaselineOutputs.for_dataset(args.dataset)
        found = run_baselines(
            args.dataset, family_of(cfg), params.baselines, data, params.seeds.split, out
        )
        log.info(
            "%s: strongest baseline %s; scores in %s", args.dataset, found["strongest"], out.scores
        )
    return 0


if __name__ == "__main__":
    run_program(main)
