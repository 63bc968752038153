"""train@<run>: the training loop, deepfit's callbacks, resuming after a kill, the divergence
guard, gradient-norm probes, and the GAN scorer's training.

``run.train_run`` is the train stage's one call; ``scorer.train_scorer`` the train_scorer's.
"""
