"""evaluate@<run>: test metrics, baselines on the same split, the fit verdict and the GAN scorer.

``run.evaluate_run`` is the stage's one call; ``metrics``, ``baselines`` and ``diagnosis`` are
pure functions on arrays and histories; ``scorer`` loads the fixed GAN-scoring classifier.
"""
