"""prepare@<dataset>: params.yaml datasets.<name> (+ data/raw/ files) -> data/prepared/<name>/."""

from __future__ import annotations

from pathlib import Path

from deepfit.stages._cli import parser, run_program, stage


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__)
    cli.add_argument("--dataset", required=True, help="a name declared under datasets:")
    args = cli.parse_args(argv)
    with stage(f"prepare@{args.dataset}", dataset=args.dataset, params=args.params) as log:
        from deepfit.config import load_params
        from deepfit.data import prepare_dataset

        params = load_params(args.params)
        cfg = params.dataset(args.dataset)
        out_dir = Path("data/prepared") / args.dataset
        manifest = prepare_dataset(
            args.dataset, cfg, seed=params.seeds.split, out_dir=out_dir, raw_dir=Path("data/raw")
        )
        log.info("wrote %s: %s", out_dir, _counts(manifest))
    return 0


def _counts(manifest: dict) -> str:
    splits = manifest.get("splits", {})
    return ", ".join(f"{name} {info.get('samples', '?')}" for name, info in splits.items())


if __name__ == "__main__":
    run_program(main)
