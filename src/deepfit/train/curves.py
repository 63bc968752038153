"""Learning-curve and gradient-norm tables of a run: the CSV files DVC plots."""

from __future__ import annotations

from deepfit.outputs import csv_text


def curve_tables(history: dict[str, list[float]]) -> dict[str, str]:
    """One CSV per metric with columns epoch,train,val so DVC overlays train and validation."""
    tables = {}
    for name, train_values in history.items():
        if name.startswith("val_") or f"val_{name}" not in history:
            continue
        pairs = zip(train_values, history[f"val_{name}"], strict=True)
        rows = [[epoch, repr(train), repr(val)] for epoch, (train, val) in enumerate(pairs, 1)]
        tables[name] = csv_text(["epoch", "train", "val"], rows)
    return tables


def gradient_table(records: list[dict[str, float]]) -> str:
    """Long-format CSV (epoch,layer,norm) of per-epoch gradient norms, for DVC plots."""
    rows = [
        [epoch, layer, repr(norm)]
        for epoch, norms in enumerate(records, start=1)
        for layer, norm in norms.items()
    ]
    return csv_text(["epoch", "layer", "norm"], rows)
