"""train_scorer: params.yaml scorer + data/prepared/<scorer.dataset>/ -> models/_scorer/, the fixed
classifier whose features score GAN samples."""

from __future__ import annotations

from pathlib import Path

from deepfit.stages._cli import deterministic_ops, parser, run_program, stage


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__)
    cli.add_argument("--out", default="models/_scorer", help="output folder (default: %(default)s)")
    args = cli.parse_args(argv)
    with stage("train_scorer") as log:
        from deepfit.config import load_params
        from deepfit.data import load_prepared

        params = load_params(args.params)
        data = load_prepared(Path("data/prepared") / params.scorer.dataset)

        deterministic_ops()
        from deepfit.train.scorer import train_scorer

        info = train_scorer(params.scorer, data, Path(args.out))
        log.info("scorer saved to %s (test accuracy %.4f)", args.out, info["test_accuracy"])
    return 0


if __name__ == "__main__":
    run_program(main)
