"""The import direction of the library: a package imports from the core and from earlier
pipeline steps, never from later ones (core < data < models < train < evaluate < study < tune <
report); the stages and the `deepfit` command may import anything. One exception: the params
schema (config.py) reads the dataset and architecture config classes.

Read from the source with ``ast``: every import, at module level or inside a function, counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGE = ROOT / "src" / "deepfit"
CORE = ("config", "tracking", "outputs", "figures", "server")
STEPS = ("core", "data", "models", "train", "evaluate", "study", "tune", "report")
# The one import against the flow, documented in the README's Layout: the params schema reads
# the dataset configs and, through the registry, each architecture's config class (no Keras).
SCHEMA_READS = {
    ("deepfit.config", "deepfit.data.config"),
    ("deepfit.config", "deepfit.models"),
    ("deepfit.config", "deepfit.models.base"),
}
FREE = ("stages", "cli")  # thin CLIs: they call every step


def _layer(module: str) -> str | None:
    """``deepfit.train.loop`` -> ``train``; core modules -> ``core``; CLIs -> None."""
    parts = module.split(".")
    if parts[0] != "deepfit":
        return None
    if len(parts) == 1 or parts[1] in CORE or parts[1] in ("__init__", "__main__"):
        return "core"
    if parts[1] in FREE:
        return None
    assert parts[1] in STEPS, f"deepfit.{parts[1]}: a module outside the known layers"
    return parts[1]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(path: Path) -> set[str]:
    """The deepfit modules ``path`` imports (``from deepfit import figures`` is the module
    ``deepfit.figures``; relative imports are resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            for alias in node.names:  # `from deepfit import figures`: a module, not a name
                candidate = f"{module}.{alias.name}"
                top = PACKAGE.parent / Path(*candidate.split("."))
                if top.with_suffix(".py").is_file() or (top / "__init__.py").is_file():
                    found.add(candidate)
    return {m for m in found if m == "deepfit" or m.startswith("deepfit.")}


SOURCES = sorted(PACKAGE.rglob("*.py"))


def _violations(layer: str) -> list[str]:
    rank = STEPS.index(layer)
    bad = []
    for path in SOURCES:
        if _layer(_module_name(path)) != layer:
            continue
        for module in sorted(_imported(path)):
            other = _layer(module)
            if (_module_name(path), module) in SCHEMA_READS:
                continue
            if other is not None and STEPS.index(other) > rank:
                bad.append(f"{path.relative_to(ROOT)} imports {module} (step '{other}')")
    return bad


def test_every_module_is_in_a_known_layer():
    assert len(SOURCES) > 30
    for path in SOURCES:
        _layer(_module_name(path))  # asserts on an unknown package


def test_the_checker_sees_every_kind_of_import(tmp_path):
    """Guards the guard: module-level, in-function, relative and from-package imports."""
    assert _imported(PACKAGE / "report" / "summary.py") >= {
        "deepfit.figures",
        "deepfit.config",
        "deepfit.evaluate.metrics",
        "deepfit.outputs",
    }
    assert "deepfit.evaluate.scorer" in _imported(PACKAGE / "evaluate" / "run.py")  # in a def
    assert _layer("deepfit.stages.train") is None and _layer("deepfit.tracking") == "core"


@pytest.mark.parametrize("layer", STEPS)
def test_no_package_imports_a_later_pipeline_step(layer):
    assert _violations(layer) == []


def test_report_never_imports_train():
    report = [p for p in SOURCES if _layer(_module_name(p)) == "report"]
    assert report
    for path in report:
        assert not [m for m in _imported(path) if _layer(m) == "train"], path
