"""Generative adversarial network for images: config, MLP generator and discriminator.

The Keras model class ``GAN`` (its ``train_step``) lives in ``deepfit.models.gan_network``,
imported when a GAN is built or loaded, so validating params.yaml does not import Keras.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, model_validator

from deepfit.models.base import (
    ActivationSpec,
    ArchConfig,
    DataSpec,
    DropoutRate,
    ModelSpec,
    PositiveInt,
    Widths,
    check_per_layer,
    per_layer,
)
from deepfit.models.blocks import dense_stack

if TYPE_CHECKING:
    import keras

# Upper bound for a noise seed drawn from the process RNG (fits every backend's int32 seed).
_MAX_SEED = 2**31 - 1


class GANConfig(ArchConfig):
    """Noise size, generator and discriminator widths, activation(s), regularisation."""

    latent_dim: PositiveInt = 32
    generator_units: Widths = Field([128, 256])
    discriminator_units: Widths = Field([256, 128])
    # One name for both networks, or one per layer: generator layers first.
    activation: ActivationSpec = "leaky_relu"
    dropout: DropoutRate = 0.3  # discriminator only
    batch_norm: bool = True  # generator only
    # One-sided: real images are labelled 1 - label_smoothing, fakes stay 0.
    label_smoothing: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.1

    @model_validator(mode="after")
    def _one_activation_per_layer(self) -> GANConfig:
        n_layers = len(self.generator_units) + len(self.discriminator_units)
        check_per_layer(self.activation, n_layers, "generator_units + discriminator_units")
        return self


def build_generator(cfg: GANConfig, image_shape: tuple[int, ...]) -> keras.Model:
    """Noise (latent_dim,) -> dense stack -> sigmoid pixels in [0, 1], shaped like the images."""
    import keras
    from keras import layers

    n_layers = len(cfg.generator_units)
    activations = per_layer(cfg.activation, n_layers + len(cfg.discriminator_units))
    noise = keras.Input(shape=(cfg.latent_dim,), name="noise")
    x = dense_stack(
        noise,
        cfg.generator_units,
        activations[:n_layers],
        dropout=0.0,
        l2=0.0,
        batch_norm=cfg.batch_norm,
        prefix="generator",
    )
    x = layers.Dense(math.prod(image_shape), activation="sigmoid", name="pixels")(x)
    images = layers.Reshape(image_shape, name="images")(x)
    return keras.Model(noise, images, name="generator")


def build_discriminator(cfg: GANConfig, image_shape: tuple[int, ...]) -> keras.Model:
    """Image -> flatten -> dense stack with dropout -> one logit (real vs generated)."""
    import keras
    from keras import layers

    n_generator = len(cfg.generator_units)
    activations = per_layer(cfg.activation, n_generator + len(cfg.discriminator_units))
    images = keras.Input(shape=image_shape, name="images")
    x = layers.Flatten(name="flatten")(images)
    x = dense_stack(
        x,
        cfg.discriminator_units,
        activations[n_generator:],
        dropout=cfg.dropout,
        l2=0.0,
        batch_norm=False,
        prefix="discriminator",
    )
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model(images, logit, name="discriminator")


def build(cfg: GANConfig, data: DataSpec, seed: int | None = None) -> keras.Model:
    """An uncompiled GAN for images shaped like ``data``; labels and ``n_outputs`` are ignored.

    ``seed`` seeds the training noise; by default it is drawn from Python's RNG, which
    ``keras.utils.set_random_seed`` seeds, so the one seeding call per process covers it.
    """
    image_shape = tuple(data.input_shape)
    from deepfit.models.gan_network import GAN

    return GAN(
        build_generator(cfg, image_shape),
        build_discriminator(cfg, image_shape),
        latent_dim=cfg.latent_dim,
        label_smoothing=cfg.label_smoothing,
        seed=random.randint(1, _MAX_SEED) if seed is None else seed,
        input_scale=data.input_scale,
        name="gan",
    )


def custom_objects() -> dict[str, type]:
    """What ``keras.saving.load_model`` needs to load a saved GAN."""
    from deepfit.models.gan_network import GAN

    return {"deepfit>GAN": GAN}


SPEC = ModelSpec(
    name="gan",
    config=GANConfig,
    build=build,
    input_kinds=frozenset({"image"}),
    tasks=frozenset({"classification", "regression"}),
    generative=True,
    description="GAN: MLP generator (noise -> image in [0, 1]) and MLP discriminator (logit)",
    extra={"custom_objects": custom_objects},
)
