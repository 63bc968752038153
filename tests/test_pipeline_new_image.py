"""End to end, continued: a new image in a copy of the shared pipeline (conftest's `pipeline`)
reruns its dataset's chain and nothing the image does not reach. A file of its own so that
another xdist worker takes it beside test_pipeline_changes.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import PIXEL_CLASSES, add_images, copy_pipeline, sh

pytestmark = pytest.mark.slow


@pytest.fixture
def changed(pipeline, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the shared pipeline."""
    root, env = pipeline
    return copy_pipeline(root, tmp_path / "repo"), env


def test_adding_an_image_reruns_prepare_and_its_downstream(changed):
    """prepare@<dataset> depends on data/raw/: a new image reruns the pics chain (the other
    prepare stages rerun too, write the same files, and nothing after them reruns)."""
    root, env = changed
    add_images(root / "data" / "raw" / "pics" / "class_1", PIXEL_CLASSES[1], 1, start=10)
    assert "prepare@pics" in sh(["dvc", "status"], root, env)
    ran = set(re.findall(r"Running stage '([^']+)'", sh(["dvc", "repro"], root, env)))
    assert {"prepare@pics", "baseline@pics", "train@pix", "evaluate@pix", "report"} <= ran
    assert not ran & {"train_scorer", "train@fnn", "baseline@digits", "evaluate@fnn"}
    assert "up to date" in sh(["dvc", "status"], root, env)
    manifest = json.loads((root / "data/prepared/pics/manifest.json").read_text())
    assert sum(info["samples"] for info in manifest["splits"].values()) == 31
