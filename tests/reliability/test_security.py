"""Security: models load only as .keras in safe mode (no Lambda code), no pickle, eval, exec or
shell anywhere in the library, YAML through a safe loader, servers on loopback, version floors."""

from __future__ import annotations

import re
from importlib import metadata

import pytest
import yaml
from packaging.version import Version

from deepfit.config import ConfigError, _Loader, load_params
from deepfit.models import ModelFileError, load_model
from helpers import ROOT

SOURCES = sorted((ROOT / "src" / "deepfit").rglob("*.py"))
FORBIDDEN = {
    r"\bpickle\b": "pickle",
    r"allow_pickle\s*=\s*True": "allow_pickle=True",
    r"(?<![.\w])eval\(": "eval()",
    r"(?<![.\w])exec\(": "exec()",
    r"shell\s*=\s*True": "a shell",
    r"os\.system|os\.popen": "a shell",
    r"yaml\.(unsafe_load|full_load)|Loader\s*=\s*yaml\.(Unsafe|Full)?Loader": "unsafe YAML",
    r"safe_mode\s*=\s*False|enable_unsafe_deserialization": "unsafe Keras loading",
    r"\bLambda\(": "a Lambda layer",
    r"\bmarshal\b": "marshal",
}


def test_the_library_uses_no_pickle_eval_exec_shell_or_unsafe_loading():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {what}"
        for path in SOURCES
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        for pattern, what in FORBIDDEN.items()
        if re.search(pattern, line)
    ]
    assert SOURCES and not found


def test_yaml_is_read_with_a_safe_loader_only():
    calls = [
        (path.name, line.strip())
        for path in SOURCES
        for line in path.read_text().splitlines()
        if "yaml.load(" in line
    ]
    assert calls == [("config.py", "return yaml.load(text, Loader=_Loader)")]
    assert issubclass(_Loader, yaml.SafeLoader)


def test_a_python_object_in_params_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "params.yaml"
    path.write_text(f'seeds: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match=r"params.yaml: malformed YAML .*python/object"):
        load_params(path)
    assert not marker.exists()


def test_subprocesses_take_argument_lists_never_params():
    """Every subprocess call takes an argument list (never a shell string), so no value from
    params.yaml or a URL can reach a shell."""
    import ast

    calls = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            if not (
                isinstance(node, ast.Call)
                and isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id == "subprocess"
                and func.attr in {"run", "Popen", "call", "check_output", "check_call"}
            ):
                continue
            calls.append(path.name)
            first = node.args[0] if node.args else None
            assert not isinstance(first, ast.Constant | ast.JoinedStr), (path, node.lineno)
            shell = [k for k in node.keywords if k.arg == "shell"]
            assert not shell, (path, node.lineno)
    # git (tracking), the servers (server), tune workers and `tune --apply --run` (cli)
    assert sorted(set(calls)) == ["cli.py", "server.py", "tracking.py", "worker.py"]
    assert '["git", "rev-parse", "HEAD"]' in (ROOT / "src/deepfit/tracking.py").read_text()


def test_a_keras_file_with_a_lambda_layer_is_refused(tmp_path):
    import keras

    inputs = keras.Input((4,))
    doubled = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "model.keras"
    keras.Model(inputs, keras.layers.Dense(2)(doubled)).save(path)
    with pytest.raises(ModelFileError) as refused:
        load_model(path, "fnn")
    assert str(refused.value) == (
        f"{path}: refused: it holds Python code (a Lambda layer or a pickled function), "
        "which deepfit never loads"
    )


@pytest.mark.parametrize("name", ["model.h5", "model.pkl", "model.keras"])
def test_only_existing_keras_files_are_loaded(tmp_path, name):
    with pytest.raises(ModelFileError, match=re.escape(str(tmp_path / name))):
        load_model(tmp_path / name, "fnn")


def test_mlflow_servers_bind_to_loopback_only():
    commands = [
        line.strip()
        for line in (ROOT / "Makefile").read_text().splitlines()
        if re.search(r"\bmlflow (ui|server)\b", line)
    ]
    assert commands
    for command in commands:
        assert "--host 127.0.0.1" in command and "0.0.0.0" not in command, command


def test_version_floors():
    assert Version(metadata.version("keras")) >= Version("3.15.1")
    assert Version(metadata.version("mlflow")) >= Version("3.15.0")
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert Version(pins["keras"]) >= Version("3.15.1")
    assert Version(pins["mlflow"]) >= Version("3.15.0")


def test_make_audit_checks_the_lock_file():
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("\naudit:", 1)[1].split("\n\n", 1)[0]
    assert "pip-audit" in recipe and "-r requirements.lock" in recipe and "--strict" in recipe
    assert "pip-audit" in (ROOT / "requirements.in").read_text()
