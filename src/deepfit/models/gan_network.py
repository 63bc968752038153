"""The GAN as a Keras model: generator and discriminator trained by ``fit(images)``.

As keras-io's DCGAN example: ``compile(d_optimizer, g_optimizer)``, and ``train_step`` takes one
discriminator step and one generator step. Registered for serialization as ``deepfit>GAN``, so
``keras.saving.load_model`` loads a saved GAN once this module is imported. Imports Keras:
``deepfit.models.gan`` imports it only when a GAN is built or loaded.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def _real_images(data: Any) -> Any:
    """fit() hands over ``x`` or ``(x,)`` / ``(x, y)``; a GAN uses the images only."""
    return data[0] if isinstance(data, tuple | list) else data


@keras.saving.register_keras_serializable(package="deepfit", name="GAN")
class GAN(keras.Model):
    """Generator + discriminator trained by ``fit(images)``; ``call(z)`` generates images.

    Metrics: ``d_loss`` = BCE(real as 1 - smoothing) + BCE(fake as 0) for the
    discriminator, ``g_loss`` = BCE(fake as 1) for the generator. ``seed`` seeds the
    training noise.
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        latent_dim: int,
        label_smoothing: float = 0.1,
        seed: int = 0,
        input_scale: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.label_smoothing = label_smoothing
        self.noise_seed = seed
        # Real images stored as raw pixels are rescaled to the generator's [0, 1] before the
        # discriminator sees them; generated images are already in [0, 1].
        self.input_scale = input_scale
        self.rescale_real = (
            None
            if input_scale is None
            else keras.layers.Rescaling(input_scale, name="rescale_real")
        )
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        # Both networks are built functional models; nothing is left for fit() to build.
        self.built = True

    def compile(
        self,
        d_optimizer: keras.optimizers.Optimizer,
        g_optimizer: keras.optimizers.Optimizer,
        **kwargs: Any,
    ) -> None:
        """Compile with one optimizer per network (other keyword args go to Keras)."""
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    def build_optimizers(self) -> None:
        """Create both optimizers' variables now (they appear on first use), so a training
        backup can be loaded into them before training resumes."""
        if not self.d_optimizer.built:
            self.d_optimizer.build(self.discriminator.trainable_variables)
        if not self.g_optimizer.built:
            self.g_optimizer.build(self.generator.trainable_variables)

    def get_compile_config(self) -> None:
        # Keras cannot replay a custom compile() on load; a loaded GAN generates, and is
        # compiled again (fresh optimizers) only to train further.
        return None

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        # Listed here so Keras resets them at the start of every epoch.
        return [self.d_loss_tracker, self.g_loss_tracker]

    def call(self, z: Any, training: bool | None = None) -> Any:
        return self.generator(z, training=training)

    def noise(self, n: int, seed: int | None = None) -> Any:
        """Standard normal noise: from the training stream, or fixed by an integer seed."""
        return keras.random.normal(
            (n, self.latent_dim), seed=self.seed_generator if seed is None else seed
        )

    def sample(self, n: int, seed: int) -> Any:
        """``n`` generated images (NumPy) from noise fixed by ``seed``: deterministic."""
        images = self.generator(self.noise(n, seed), training=False)
        return ops.convert_to_numpy(images)

    def scaled(self, real: Any) -> Any:
        """Real images on the generator's scale ([0, 1])."""
        return real if self.rescale_real is None else self.rescale_real(real)

    def losses(self, real: Any, z: Any, training: bool = False) -> tuple[Any, Any]:
        """Discriminator and generator losses on real images and generator noise ``z``."""
        real = self.scaled(real)
        fake = self.generator(z, training=training)
        real_logits = self.discriminator(real, training=training)
        fake_logits = self.discriminator(fake, training=training)
        return self._d_loss(real_logits, fake_logits), self._g_loss(fake_logits)

    def _gan_losses(self, real: Any, training: bool) -> tuple[Any, Any]:
        """Discriminator and generator losses on one batch of real images."""
        return self.losses(real, self.noise(ops.shape(real)[0]), training)

    def _d_loss(self, real_logits: Any, fake_logits: Any) -> Any:
        real_target = ops.full_like(real_logits, 1.0 - self.label_smoothing)
        real_loss = ops.binary_crossentropy(real_target, real_logits, from_logits=True)
        fake_loss = ops.binary_crossentropy(
            ops.zeros_like(fake_logits), fake_logits, from_logits=True
        )
        return ops.mean(real_loss) + ops.mean(fake_loss)

    def _g_loss(self, fake_logits: Any) -> Any:
        loss = ops.binary_crossentropy(ops.ones_like(fake_logits), fake_logits, from_logits=True)
        return ops.mean(loss)

    def train_step(self, data: Any) -> dict[str, Any]:
        import tensorflow as tf  # GradientTape: training runs on the TensorFlow backend

        real = self.scaled(_real_images(data))
        batch = ops.shape(real)[0]
        fake = self.generator(self.noise(batch), training=True)
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(fake, training=True)
            d_loss = self._d_loss(real_logits, fake_logits)
        d_vars = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars, strict=True))

        with tf.GradientTape() as tape:
            fake = self.generator(self.noise(batch), training=True)
            g_loss = self._g_loss(self.discriminator(fake, training=True))
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars, strict=True))
        return self._update_trackers(d_loss, g_loss)

    def test_step(self, data: Any) -> dict[str, Any]:
        d_loss, g_loss = self._gan_losses(_real_images(data), training=False)
        return self._update_trackers(d_loss, g_loss)

    def _update_trackers(self, d_loss: Any, g_loss: Any) -> dict[str, Any]:
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "generator": keras.saving.serialize_keras_object(self.generator),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "latent_dim": self.latent_dim,
            "label_smoothing": self.label_smoothing,
            "seed": self.noise_seed,
            "input_scale": self.input_scale,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> GAN:
        config = dict(config)
        for key in ("generator", "discriminator"):
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects
            )
        return cls(**config)
