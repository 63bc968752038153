"""The ``deepfit`` command: check params.yaml and list what the pipeline will run."""

from __future__ import annotations

import argparse
import sys

from deepfit.config import ConfigError, load_params


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="deepfit", description=__doc__)
    cli.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    commands = cli.add_subparsers(dest="command", required=True)
    commands.add_parser("validate", help="validate params.yaml and list datasets and runs")
    args = cli.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
