"""Generative adversarial network for images: config, generator and discriminator, as
multi-layer perceptrons for small images or convolutional networks (DCGAN shape) for larger ones.

The Keras model class ``GAN`` (its ``train_step``) lives in ``deepfit.models.gan_network``,
imported when a GAN is built or loaded, so validating params.yaml does not import Keras.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Annotated, Literal

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
# network: auto picks the convolutional networks for images larger than this on both sides.
MLP_MAX_SIDE = 8
KERNEL = 4  # DCGAN's kernel for the strided and transposed convolutions


class GANConfig(ArchConfig):
    """Noise size, network kind, generator and discriminator sizes, activation(s),
    regularisation."""

    latent_dim: PositiveInt = 32
    # mlp: dense layers; conv: DCGAN (transposed and strided convolutions); auto: conv for images
    # larger than 8x8 on both sides, mlp otherwise.
    network: Literal["auto", "mlp", "conv"] = "auto"
    generator_units: Widths = Field([128, 256])  # mlp
    discriminator_units: Widths = Field([256, 128])  # mlp
    # conv: each generator layer doubles the image size, each discriminator layer halves it
    generator_filters: Widths = Field([128, 64])
    discriminator_filters: Widths = Field([64, 128])
    # One name for both networks, or one per layer: generator layers first.
    activation: ActivationSpec = "leaky_relu"
    dropout: DropoutRate = 0.3  # discriminator only
    batch_norm: bool = True  # generator only
    # One-sided: real images are labelled 1 - label_smoothing, fakes stay 0.
    label_smoothing: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.1

    @model_validator(mode="after")
    def _one_activation_per_layer(self) -> GANConfig:
        # auto: a list may fit either network (the image size decides; building checks again)
        kinds = ("mlp", "conv") if self.network == "auto" else (self.network,)
        if not any(self._fits(kind) for kind in kinds):
            check_per_layer(self.activation, self.layer_count(kinds[0]), self.layer_keys(kinds[0]))
        return self

    def _fits(self, kind: str) -> bool:
        """One activation name, or one per hidden layer of network ``kind``."""
        names = self.activation
        return isinstance(names, str) or len(names) == self.layer_count(kind)

    def layer_count(self, kind: str) -> int:
        """Hidden layers of the generator and discriminator together, for network ``kind``."""
        if kind == "conv":
            return len(self.generator_filters) + len(self.discriminator_filters)
        return len(self.generator_units) + len(self.discriminator_units)

    @staticmethod
    def layer_keys(kind: str) -> str:
        """The keys whose entries are the hidden layers of network ``kind``, for messages."""
        size = "filters" if kind == "conv" else "units"
        return f"generator_{size} + discriminator_{size}"

    def kind_for(self, image_shape: tuple[int, ...]) -> str:
        """The network built for images of ``image_shape``: mlp or conv."""
        if self.network != "auto":
            return self.network
        return "conv" if min(image_shape[:2]) > MLP_MAX_SIDE else "mlp"

    def activations(self, kind: str) -> tuple[list[str], list[str]]:
        """Generator and discriminator activations, one per hidden layer of network ``kind``."""
        n_generator = len(self.generator_filters if kind == "conv" else self.generator_units)
        check_per_layer(self.activation, self.layer_count(kind), self.layer_keys(kind))
        names = per_layer(self.activation, self.layer_count(kind))
        return names[:n_generator], names[n_generator:]


def build_generator(cfg: GANConfig, image_shape: tuple[int, ...]) -> keras.Model:
    """Noise (latent_dim,) -> dense stack -> sigmoid pixels in [0, 1], shaped like the images."""
    import keras
    from keras import layers

    noise = keras.Input(shape=(cfg.latent_dim,), name="noise")
    x = dense_stack(
        noise,
        cfg.generator_units,
        cfg.activations("mlp")[0],
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

    images = keras.Input(shape=image_shape, name="images")
    x = layers.Flatten(name="flatten")(images)
    x = dense_stack(
        x,
        cfg.discriminator_units,
        cfg.activations("mlp")[1],
        dropout=cfg.dropout,
        l2=0.0,
        batch_norm=False,
        prefix="discriminator",
    )
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model(images, logit, name="discriminator")


def build_conv_generator(cfg: GANConfig, image_shape: tuple[int, ...]) -> keras.Model:
    """DCGAN's generator: noise -> dense projection to a small map of ``generator_filters[0]``
    channels -> one 4x4 stride-2 transposed convolution per entry of ``generator_filters``
    (batch norm, activation), each doubling the size -> a 3x3 convolution to the image's
    channels, sigmoid pixels in [0, 1]; cropped to the image size where the doublings overshoot."""
    import keras
    from keras import layers

    height, width, channels = image_shape
    factor = 2 ** len(cfg.generator_filters)
    rows, cols = -(-height // factor), -(-width // factor)
    activations = cfg.activations("conv")[0]
    noise = keras.Input(shape=(cfg.latent_dim,), name="noise")
    x = layers.Dense(
        rows * cols * cfg.generator_filters[0],
        use_bias=not cfg.batch_norm,
        name="generator_project",
    )(noise)
    x = layers.Reshape((rows, cols, cfg.generator_filters[0]), name="generator_map")(x)
    for i, (filters, activation) in enumerate(
        zip(cfg.generator_filters, activations, strict=True), start=1
    ):
        x = layers.Conv2DTranspose(
            filters,
            KERNEL,
            strides=2,
            padding="same",
            use_bias=not cfg.batch_norm,
            name=f"generator_up_{i}",
        )(x)
        if cfg.batch_norm:
            x = layers.BatchNormalization(name=f"generator_up_{i}_bn")(x)
        x = layers.Activation(activation, name=f"generator_up_{i}_{activation}")(x)
    x = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="pixels")(x)
    extra = (rows * factor - height, cols * factor - width)
    if any(extra):
        x = layers.Cropping2D(((0, extra[0]), (0, extra[1])), name="crop")(x)
    return keras.Model(noise, x, name="generator")


def build_conv_discriminator(cfg: GANConfig, image_shape: tuple[int, ...]) -> keras.Model:
    """DCGAN's discriminator: one 4x4 stride-2 convolution per entry of
    ``discriminator_filters`` (activation, dropout), each halving the size -> one logit."""
    import keras
    from keras import layers

    activations = cfg.activations("conv")[1]
    images = keras.Input(shape=image_shape, name="images")
    x = images
    for i, (filters, activation) in enumerate(
        zip(cfg.discriminator_filters, activations, strict=True), start=1
    ):
        x = layers.Conv2D(
            filters, KERNEL, strides=2, padding="same", name=f"discriminator_conv_{i}"
        )(x)
        x = layers.Activation(activation, name=f"discriminator_conv_{i}_{activation}")(x)
        if cfg.dropout > 0:
            x = layers.Dropout(cfg.dropout, name=f"discriminator_conv_{i}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model(images, logit, name="discriminator")


def build(cfg: GANConfig, data: DataSpec, seed: int | None = None) -> keras.Model:
    """An uncompiled GAN for images shaped like ``data``; labels and ``n_outputs`` are ignored.

    ``seed`` seeds the training noise; by default it is drawn from Python's RNG, which
    ``keras.utils.set_random_seed`` seeds, so the one seeding call per process covers it.
    """
    image_shape = tuple(data.input_shape)
    from deepfit.models.gan_network import GAN

    conv = cfg.kind_for(image_shape) == "conv"
    generator = (build_conv_generator if conv else build_generator)(cfg, image_shape)
    discriminator = (build_conv_discriminator if conv else build_discriminator)(cfg, image_shape)
    return GAN(
        generator,
        discriminator,
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
    description=(
        "GAN: generator (noise -> image in [0, 1]) and discriminator (logit); dense layers for "
        "images up to 8x8, DCGAN convolutions for larger ones (network: auto | mlp | conv)"
    ),
    extra={"custom_objects": custom_objects},
)
