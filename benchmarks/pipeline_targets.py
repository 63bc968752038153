"""Benchmark: cold `dvc repro` of the default pipeline and the quality targets it must reach.

Copies the repository (tracked files only, no outputs, no cache) to a temporary folder, runs
`dvc repro` there once, times it, and checks the default params' results against the targets:

    cold dvc repro                          <= 300 s on 2 CPU cores
    digits CNN test accuracy                >= 0.985
    digits FNN test accuracy                >= 0.970
    sunspots LSTM test RMSE                 <= 1.15 x the autoregressive baseline's
    adding problem LSTM test MSE            <  0.01 at the default length
    GAN classes covered                     10 of 10

Usage: `make bench` or `.venv/bin/python benchmarks/pipeline_targets.py [--json out.json]`.
Exit status 0 when every target is met, 1 otherwise. Not part of the test suite (it is a
measurement, and takes minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_repo(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file() and not rel.startswith(("reports/", "dvc.lock")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"],
    ):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)


def metric(repo: Path, run: str, *keys: str) -> float:
    node = json.loads((repo / "reports" / "metrics" / f"{run}.json").read_text())
    for key in keys:
        node = node[key]
    return float(node)


def targets(repo: Path, seconds: float) -> list[dict]:
    lstm_rmse = metric(repo, "lstm", "test", "rmse")
    ar_rmse = metric(repo, "lstm", "baseline", "ar", "rmse")
    rows = [
        ("cold dvc repro (s)", seconds, "<= 300", seconds <= 300),
        ("cnn digits test accuracy", metric(repo, "cnn", "test", "accuracy"), ">= 0.985", None),
        ("fnn digits test accuracy", metric(repo, "fnn", "test", "accuracy"), ">= 0.970", None),
        (
            "lstm sunspots RMSE / AR RMSE",
            lstm_rmse / ar_rmse,
            "<= 1.15",
            lstm_rmse / ar_rmse <= 1.15,
        ),
        ("lstm adding test MSE", metric(repo, "lstm_adding", "test", "mse"), "< 0.01", None),
        ("gan classes covered", metric(repo, "gan", "test", "classes_covered"), "== 10", None),
    ]
    checks = {
        "cnn digits test accuracy": lambda v: v >= 0.985,
        "fnn digits test accuracy": lambda v: v >= 0.970,
        "lstm adding test MSE": lambda v: v < 0.01,
        "gan classes covered": lambda v: v == 10,
    }
    out = []
    for name, value, target, met in rows:
        met = checks[name](value) if met is None else met
        out.append({"measure": name, "value": round(value, 4), "target": target, "met": bool(met)})
    extras = {
        "rnn sunspots RMSE": metric(repo, "rnn", "test", "rmse"),
        "lstm sunspots RMSE": lstm_rmse,
        "AR sunspots RMSE": ar_rmse,
        "rnn adding test MSE": metric(repo, "rnn_adding", "test", "mse"),
        "svm digits accuracy": metric(repo, "cnn", "baseline", "svm", "accuracy"),
        "gan FID": metric(repo, "gan", "test", "fid"),
        "gan FID real-vs-real floor": metric(repo, "gan", "baseline", "fid_real_vs_real"),
    }
    out.extend(
        {"measure": k, "value": round(v, 4), "target": "", "met": None} for k, v in extras.items()
    )
    return out


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--json", type=Path, help="also write the results here")
    cli.add_argument("--keep", action="store_true", help="keep the temporary repository")
    args = cli.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="deepfit-bench-"))
    repo = work / "repo"
    repo.mkdir()
    copy_repo(repo)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    started = time.perf_counter()
    done = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
        print(f"dvc repro failed after {seconds:.0f} s (repo kept at {repo})", file=sys.stderr)
        return 1

    rows = targets(repo, seconds)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"deepfit pipeline benchmark ({machine})")
    for row in rows:
        status = "" if row["met"] is None else ("met" if row["met"] else "NOT MET")
        print(f"  {row['measure']:<32} {row['value']:>10}  {row['target']:<9} {status}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["met"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
