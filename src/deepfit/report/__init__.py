"""report: summary.md and the learning-curve figure over all runs (``summary.write_report``),
``deepfit compare``, one table over MLflow runs across DVC experiments (``compare``), and
``deepfit promote``, the best run's model registered as ``deepfit-<run>@champion`` (``promote``).
"""
