"""report: summary.md and the learning-curve figure over all runs (``summary.write_report``),
and ``deepfit compare``, one table over MLflow runs across DVC experiments (``compare``).
"""
