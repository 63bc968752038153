"""Hyperparameter search (``tuning:`` in params): Optuna studies over a run's keys, with pruning
on the validation curve, workers sharing one study in a database, and every trial an MLflow
child run. Imports train and evaluate; report may read what it writes."""

from __future__ import annotations


class TuneError(RuntimeError):
    """A search cannot run as asked (storage unreachable, study missing); one line, fixable."""
