"""report: markdown tables over all runs (scores, fit verdicts) and one figure comparing their
learning curves, from the metrics, evidence and curve files the earlier stages wrote."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from deepfit import figures
from deepfit.config import Params
from deepfit.evaluate.metrics import KEY_METRICS, evaluation_kind
from deepfit.outputs import write_text

log = logging.getLogger(__name__)


def read_curves(curves_dir: Path) -> dict[str, list[float]]:
    """Read ``<metric>.csv`` (epoch,train,val) files back into a Keras-style history dict."""
    history: dict[str, list[float]] = {}
    for path in sorted(curves_dir.glob("*.csv")):
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        history[path.stem] = [float(r["train"]) for r in rows]
        history[f"val_{path.stem}"] = [float(r["val"]) for r in rows]
    return history


def summary_rows(params: Params, reports: Path) -> list[dict[str, Any]]:
    """One row per declared run whose metrics exist: key metric beside its baseline."""
    rows = []
    for name, run in params.runs.items():
        path = reports / "metrics" / f"{name}.json"
        if not path.exists():
            log.warning("%s: no metrics at %s; left out of the summary", name, path)
            continue
        kind = evaluation_kind(run.model, params.dataset(run.dataset))
        metric, _, better = KEY_METRICS[kind]
        scores = json.loads(path.read_text())
        evidence = _read(reports / "evidence" / f"{name}.json")
        info = _read(reports / "evidence" / f"{name}.run.json")
        train = evidence.get("train", {})
        rows.append(
            {
                "run": name,
                "model": run.model,
                "dataset": run.dataset,
                "metric": f"test.{metric}",
                "value": scores["test"].get(metric),
                "baseline": scores["baseline"].get(metric),
                "baseline_name": scores["baseline"].get("name"),
                "versus": evidence.get("versus_baseline", {}),
                "better": better,
                "epochs": train.get("epochs"),
                "best_epoch": train.get("best_epoch"),
                "params": train.get("params"),
                "seconds": info.get("train", {}).get("seconds"),
                "fit": evidence.get("fit", {}),
                "gradients": evidence.get("gradients", {}),
            }
        )
    return rows


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The key test metric with its 95 % interval beside the strongest baseline, and the verdict
    of the paired test between them."""
    header = (
        "| run | model | dataset | metric | value [95 % interval] | strongest baseline "
        "| model vs baseline | epochs (kept) | parameters | train time |\n"
        "|---|---|---|---|---:|---:|---|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        versus = r["versus"]
        interval = f" [{_num(versus['ci_low'])}, {_num(versus['ci_high'])}]" if versus else ""
        lines.append(
            f"| {r['run']} | {r['model']} | {r['dataset']} | {r['metric']} "
            f"| {_num(r['value'])}{interval} | {_num(r['baseline'])} ({r['baseline_name']}) "
            f"| {_versus(versus)} | {r['epochs']} ({r['best_epoch']}) | {r['params']:,} "
            f"| {_seconds(r['seconds'])} |"
        )
    return header + "\n".join(lines) + "\n"


def plain_words(rows: list[dict[str, Any]]) -> str:
    """One sentence per run that does not beat its baseline: losing is reported as losing."""
    lines = []
    for r in rows:
        verdict = r["versus"].get("verdict")
        if verdict in (None, "better"):
            continue
        what = "loses to" if verdict == "worse" else "does not beat"
        lines.append(
            f"- **{r['run']} {what} its baseline**: {r['metric']} {_num(r['value'])} against "
            f"{_num(r['baseline'])} for {r['baseline_name']} ({verdict})."
        )
    return ("\n".join(lines) + "\n") if lines else "Every run beats its strongest baseline.\n"


def language_words(rows: list[dict[str, Any]]) -> str:
    """Per text corpus: the language models' bits per character beside the strongest baseline,
    and whether the best LSTM beats every other run and that baseline (issue 14, T1)."""
    models = [r for r in rows if r["metric"] == "test.bpc"]
    lines = []
    for dataset in sorted({r["dataset"] for r in models}):
        here = sorted((r for r in models if r["dataset"] == dataset), key=lambda r: r["value"])
        listed = ", ".join(f"{r['run']} ({r['model']}) {_num(r['value'])}" for r in here)
        base = f"{here[0]['baseline_name']} {_num(here[0]['baseline'])}"
        lstm = next((r for r in here if r["model"] == "lstm"), None)
        if lstm is None:
            verdict = "no LSTM run on this corpus"
        elif lstm is here[0] and lstm["value"] < lstm["baseline"]:
            verdict = f"the LSTM ({lstm['run']}) has the fewest bits per character"
        else:
            verdict = (
                f"**the LSTM ({lstm['run']}) does not beat every other model and the baseline**"
            )
        lines.append(f"- {dataset}: {listed}; baseline {base} bits per character: {verdict}.")
    return "\n".join(lines) + "\n" if lines else ""


def _versus(versus: dict[str, Any]) -> str:
    """``better (p = 0.003)``, in words; a GAN's FID intervals have no p-value."""
    if not versus:
        return "n/a"
    if "p_value" in versus:
        return f"**{versus['verdict']}** (p = {versus['p_value']:.2g}, {versus['test']})"
    return f"**{versus['verdict']}** (intervals of both)"


def fit_table(rows: list[dict[str, Any]]) -> str:
    """Each run's fit verdict with its evidence, at the best epoch and the last one."""
    header = (
        "| run | verdict | best epoch | train loss (best / last) | val loss (best / last) "
        "| gap (best / last) | skill: train / val | val rise | vanished gradients |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        f, g = r["fit"], r["gradients"]
        if not f:
            lines.append(f"| {r['run']} | n/a (evaluated before fit verdicts existed) |||||||")
            continue
        vanished = (g.get("vanished") or "none") if g else "not recorded"
        lines.append(
            f"| {r['run']} | **{f['verdict']}** | {f['best_epoch']} of {f['epochs']} "
            f"| {_g(f['train_loss_best'])} / {_g(f['train_loss_last'])} "
            f"| {_g(f['val_loss_best'])} / {_g(f['val_loss_last'])} "
            f"| {_g(f['gap_best'])} / {_g(f['gap_last'])} "
            f"| {f['train_skill']:.2f} / {f['val_skill']:.2f} | {f['val_rise']:.0%} | {vanished} |"
        )
    reasons = "\n".join(f"- {r['run']}: {r['fit']['reasons']}" for r in rows if r["fit"])
    return header + "\n".join(lines) + "\n\n" + reasons + "\n"


def write_report(params: Params, reports: Path = Path("reports")) -> Path:
    """Write reports/summary.md and reports/figures/learning_curves.png."""
    rows = summary_rows(params, reports)
    histories = {
        name: read_curves(reports / "plots" / name / "curves") for name in (r["run"] for r in rows)
    }
    titles = {r["run"]: f"{r['run']}: {r['fit'].get('verdict', 'n/a')}" for r in rows}
    figure = figures.learning_curves_png(
        histories, reports / "figures" / "learning_curves.png", titles=titles
    )
    text = (
        "# deepfit summary\n\n"
        "Each run's key test metric, with its 95 % interval, beside the strongest of the "
        "classical baselines tuned on the same split (`reports/baselines/<dataset>.json`), and a "
        "paired test on the same test items (`reports/evidence/<run>.json` has every number). "
        "A run is called better or worse only when p < 0.05. Epochs: how many ran and, in "
        "brackets, the one whose weights the model kept (the lowest validation loss, a GAN's last; "
        "the Fit section's best epoch is that of the smoothed curve).\n\n"
        + markdown_table(rows)
        + "\n"
        + plain_words(rows)
        + _section("Language models (test bits per character, lower is better)", rows)
        + "\n## Fit\n\n"
        "Verdicts from each run's per-epoch history (rules and thresholds: README, "
        '"Reading the fit"; params `fit:`). Skill is 1 - loss / the constant predictor\'s loss; '
        "the gap is validation minus training loss; val rise is how far validation loss climbed "
        "after its best epoch.\n\n"
        + fit_table(rows)
        + f"\n![learning curves of all runs]({figure.relative_to(reports)})\n"
    )
    return write_text(reports / "summary.md", text)


def _section(title: str, rows: list[dict[str, Any]]) -> str:
    words = language_words(rows)
    return f"\n## {title}\n\n{words}" if words else ""


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def _g(value: float) -> str:
    return f"{value:.3g}"


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
