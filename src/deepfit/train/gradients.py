"""Per-layer gradient norms of the data loss on a fixed, seeded training sample, each epoch.

The probes are ``tf.function``s over ``GradientTape`` (the TensorFlow backend trains); the
``GradientNorms`` callback in ``deepfit.train.callbacks`` calls one after every epoch. The sample
(``train.gradients.samples``) is fed in chunks of the run's batch size and their gradients are
summed, so measuring needs no more memory than a training step: the activations of 256 images
at once would take 4 times the memory of a batch of 64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras

from deepfit.train.callbacks import GradientNorms

if TYPE_CHECKING:
    from deepfit.config import TrainConfig
    from deepfit.data import Prepared


def gradient_callback(
    model: keras.Model, data: Prepared, cfg: TrainConfig, seed: int, generative: bool
) -> GradientNorms | None:
    """Per-layer gradient norms each epoch on a fixed, seeded sample of the training split,
    logged to the active MLflow run as ``grad_norm.<layer>`` (step = epoch)."""
    if not cfg.gradients.enabled:
        return None
    from deepfit.train.loop import fixed_rows

    x, y = fixed_rows(data.train, cfg.gradients.samples, seed)
    if generative:
        probe = gan_gradient_probe(model, x, seed, cfg.batch_size)
    else:
        probe = gradient_probe(model, x, y, cfg.batch_size)
    return GradientNorms(probe, _log_norms)


def _log_norms(norms: dict[str, float], epoch: int) -> None:
    import mlflow

    values = {f"grad_norm.{k}": v for k, v in norms.items()}
    mlflow.log_metrics(values, step=epoch, synchronous=False)


def layer_weights(model: keras.Model, prefix: str = "") -> list[tuple[str, list]]:
    """``(layer name, trainable variables)`` in forward order; nested models as ``outer/inner``."""
    groups: list[tuple[str, list]] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            groups.extend(layer_weights(layer, f"{prefix}{layer.name}/"))
        elif layer.trainable_weights:
            groups.append((f"{prefix}{layer.name}", list(layer.trainable_weights)))
    return groups


def gradient_probe(
    model: keras.Model, x: Any, y: Any, chunk: int | None = None
) -> Callable[[], dict[str, float]]:
    """Per-layer gradient norms of a compiled supervised model's mean loss on ``(x, y)``,
    computed ``chunk`` samples at a time (all at once by default)."""
    import tensorflow as tf  # GradientTape: training runs on the TensorFlow backend

    loss_fn = keras.losses.get(model.loss)
    groups = layer_weights(model)
    weights = _flat(groups)

    def gradient(xc: Any, yc: Any) -> list:
        n = keras.ops.cast(keras.ops.shape(xc)[0], "float32")  # the chunk's mean, times its size
        with tf.GradientTape() as tape:
            total = keras.ops.mean(loss_fn(yc, model(xc, training=False))) * n
        return tape.gradient(total, weights)

    @tf.function  # one graph: a few milliseconds per epoch instead of tens
    def squared_norms() -> list:
        return _squared_norms(groups, _mean_gradient(gradient, (x, y), chunk, weights))

    return _named_probe(groups, squared_norms)


def gan_gradient_probe(
    model: keras.Model, real: Any, seed: int, chunk: int | None = None
) -> Callable[[], dict[str, float]]:
    """Per-layer gradient norms of a GAN: discriminator loss for the discriminator's layers,
    generator loss for the generator's, on fixed real images and fixed noise, ``chunk``
    images at a time (all at once by default)."""
    import tensorflow as tf

    z = model.noise(len(real), seed=seed)
    groups = layer_weights(model.generator, "generator/")
    d_groups = layer_weights(model.discriminator, "discriminator/")
    g_weights, d_weights = _flat(groups), _flat(d_groups)

    def gradient(rc: Any, zc: Any) -> list:
        n = keras.ops.cast(keras.ops.shape(rc)[0], "float32")  # the losses are chunk means
        with tf.GradientTape(persistent=True) as tape:
            d_loss, g_loss = model.losses(rc, zc, training=False)
            g_total, d_total = g_loss * n, d_loss * n
        return tape.gradient(g_total, g_weights) + tape.gradient(d_total, d_weights)

    @tf.function
    def squared_norms() -> list:
        mean = _mean_gradient(gradient, (real, z), chunk, g_weights + d_weights)
        return _squared_norms(groups + d_groups, mean)

    return _named_probe(groups + d_groups, squared_norms)


def _mean_gradient(
    gradient: Callable[..., list], arrays: tuple, chunk: int | None, weights: list
) -> list:
    """In a ``tf.function``: the gradient of the mean loss over all rows of ``arrays``, summed
    from ``gradient(*rows)`` (the gradient of a chunk's mean loss times its size) over
    consecutive chunks of ``chunk`` rows. A graph loop runs one chunk after the other
    (``parallel_iterations=1``), so only one chunk's activations are alive at a time. A None
    gradient (the loss does not depend on that weight) counts as zeros."""
    import tensorflow as tf

    n = len(arrays[0])
    size = chunk or n
    arrays = tuple(tf.convert_to_tensor(a) for a in arrays)

    def body(i: Any, total: list) -> tuple[Any, list]:
        start = i * size
        parts = gradient(*(a[start : start + size] for a in arrays))
        return i + 1, [t if g is None else t + g for t, g in zip(total, parts, strict=True)]

    zeros = [tf.zeros_like(w) for w in weights]
    _, total = tf.while_loop(
        lambda i, _: i < -(-n // size), body, (tf.constant(0), zeros), parallel_iterations=1
    )
    return [t / n for t in total]


def _named_probe(groups: list[tuple[str, list]], squared_norms: Callable[[], list]):
    def probe() -> dict[str, float]:
        return _as_norms(groups, squared_norms())

    probe.layers = [name for name, _ in groups]  # type: ignore[attr-defined]
    # Builds the graph and runs it once (TensorFlow optimises a graph at its first run), result
    # unused: GradientNorms does it in a thread while training. No arguments: later calls reuse it.
    probe.warm_up = squared_norms  # type: ignore[attr-defined]
    return probe


def _flat(groups: list[tuple[str, list]]) -> list:
    return [v for _, variables in groups for v in variables]


def _squared_norms(groups: list[tuple[str, list]], grads: list) -> list:
    out, i = [], 0
    for _, variables in groups:
        parts = [keras.ops.sum(keras.ops.square(g)) for g in grads[i : i + len(variables)]]
        out.append(keras.ops.sum(keras.ops.stack(parts)))
        i += len(variables)
    return out


def _as_norms(groups: list[tuple[str, list]], squared: list) -> dict[str, float]:
    return {name: float(s) ** 0.5 for (name, _), s in zip(groups, squared, strict=True)}


def gradients_through_time(model: keras.Model, x: Any, y: Any, windows: int = 256) -> list[float]:
    """How far back a language model's gradient reaches: the mean norm (over the first
    ``windows`` windows) of the gradient of the last position's loss with respect to the
    embedded input at each position, indexed by the distance back from the last position
    (0 = the last position itself)."""
    import numpy as np
    import tensorflow as tf

    embedding = model.get_layer("embedding")
    rest = keras.Model(embedding.output, model.output)  # everything after the embedding
    ids = np.asarray(x[:windows], dtype=np.int32)
    last = tf.constant(np.asarray(y[:windows])[:, -1].astype(np.int32))
    embedded = embedding(ids)
    with tf.GradientTape() as tape:
        tape.watch(embedded)
        picked = tf.gather(rest(embedded)[:, -1, :], last, batch_dims=1)
        loss = -tf.reduce_mean(tf.math.log(picked + 1e-7))
    norms = tf.reduce_mean(tf.norm(tape.gradient(loss, embedded), axis=-1), axis=0)
    return [float(v) for v in norms.numpy()[::-1]]


def reach_of(norms: list[float]) -> float:
    """How far a gradient reaches (``gradients_through_time``): its norm at a window's first
    position over its norm at the last."""
    return norms[-1] / norms[0] if norms[0] > 0 else 0.0
