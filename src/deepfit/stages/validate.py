"""validate: params.yaml, all of it -> .dvc/tmp/deepfit/params-valid.

Every other stage depends on its own keys only, so an edit of a key that no stage reads (a typo
such as ``trian:``) would rerun nothing and pass in silence. This stage depends on the whole
file, so it reruns on every edit; it writes a constant file that nothing depends on, so its rerun
reruns nothing else.
"""

from __future__ import annotations

from pathlib import Path

from deepfit.stages._cli import parser, run_program, stage

MARK = Path(".dvc/tmp/deepfit/params-valid")


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__).parse_args(argv)
    with stage("validate") as log:
        from deepfit.config import load_params
        from deepfit.outputs import write_text

        load_params(args.params)
        write_text(MARK, "params.yaml is valid\n")
        log.info("%s: valid", args.params)
    return 0


if __name__ == "__main__":
    run_program(main)
