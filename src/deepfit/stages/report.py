"""report: reports/metrics/*.json + reports/plots/*/curves/ -> reports/summary.md and
reports/figures/learning_curves.png."""

from __future__ import annotations

from deepfit.stages._cli import parser, run_program, stage


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__).parse_args(argv)
    with stage("report") as log:
        from deepfit.config import load_params
        from deepfit.report.summary import write_report

        path = write_report(load_params(args.params))
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    run_program(main)
