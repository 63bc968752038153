"""study@<study>: a base run trained in declared variants (capacity, regularisation,
activation), each judged like a pipeline run; its table, figure and MLflow runs.

``run.run_study`` is the study stage's one call.
"""
