"""Every registered architecture: config checks, build, one epoch, .keras round trip, seeding."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import keras
import numpy as np
import pytest
from pydantic import ValidationError

from deepfit.models import REGISTRY
from deepfit.models.base import Activation, DataSpec, ModelSpec
from helpers import build_arch as build
from helpers import compile_for

SHAPES = {
    "image": (8, 8, 1),
    "sequence": (6, 2),
    "vector": (5,),
    "tokens": (6,),
    "translation": (5,),
    "text": (),  # one raw string per sample
}
N_OUTPUTS = {"classification": 3, "regression": 2}
N_SAMPLES = 32
# Token kinds: a vocabulary of this many ids; a translation's source vocabulary and length.
VOCAB, SOURCE_VOCAB, TARGET_LENGTH = 7, 9, 4
TOKEN_KINDS = ("tokens", "translation")
# Texts: the vocabulary the model's TextVectorization layer is built from, words per text.
WORDS, TEXT_LENGTH = ("good", "bad", "film"), 4
CLASSIFY_ONLY = (*TOKEN_KINDS, "text")  # ids predict ids; texts are classified


def data_spec(kind: str, task: str) -> DataSpec:
    if kind == "text":
        return DataSpec((), "text", task, 3, vocabulary=WORDS, sequence_length=TEXT_LENGTH)
    if kind in TOKEN_KINDS:
        extra = {"input_vocab": SOURCE_VOCAB, "target_length": TARGET_LENGTH}
        return DataSpec(SHAPES[kind], kind, task, VOCAB, **(extra if kind == "translation" else {}))
    return DataSpec(SHAPES[kind], kind, task, N_OUTPUTS[task])  # type: ignore[arg-type]


def expected_output_shape(spec: DataSpec) -> tuple[int | None, ...]:
    """One prediction per sample; per position for a language model, per target token for a
    translation."""
    if spec.kind == "tokens":
        return (None, None, spec.n_outputs)
    if spec.kind == "translation":
        return (None, spec.target_length, spec.n_outputs)
    return (None, spec.n_outputs)


def synthetic(spec: DataSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs in [0, 1) (as prepared images are) and targets matching the task; token ids for
    token kinds; strings of known and unknown words (some empty) for texts."""
    rng = np.random.default_rng(seed)
    if spec.kind == "text":
        words = [*WORDS, "unseen"]
        texts = [" ".join(rng.choice(words, rng.integers(0, 7))) for _ in range(N_SAMPLES)]
        return np.array(texts, dtype=object), rng.integers(0, spec.n_outputs, N_SAMPLES)
    if spec.kind in TOKEN_KINDS:
        x = rng.integers(0, spec.input_vocab or spec.n_outputs, (N_SAMPLES, *spec.input_shape))
        y_length = spec.target_length or spec.input_shape[0]
        return x.astype(np.int32), rng.integers(0, spec.n_outputs, (N_SAMPLES, y_length))
    x = rng.random((N_SAMPLES, *spec.input_shape), dtype=np.float32)
    if spec.task == "classification":
        return x, rng.integers(0, spec.n_outputs, N_SAMPLES)
    return x, rng.normal(size=(N_SAMPLES, spec.n_outputs)).astype(np.float32)


def all_cases() -> list[tuple[str, str, str]]:
    return [
        (name, kind, task)
        for name, spec in REGISTRY.items()
        for kind in sorted(spec.input_kinds)
        for task in sorted(spec.tasks)
        if kind not in CLASSIFY_ONLY or task == "classification"
    ]


def train_cases() -> list[tuple[str, str, str]]:
    """Every (model, input kind) once; images, tokens and texts classify, other kinds regress, to
    cover both."""
    return [
        (name, kind, "classification" if kind in ("image", *CLASSIFY_ONLY) else "regression")
        for name, spec in REGISTRY.items()
        for kind in sorted(spec.input_kinds)
    ]


def load(path: Path, model_spec: ModelSpec) -> keras.Model:
    custom_objects = model_spec.extra.get("custom_objects", dict)()
    return keras.models.load_model(path, custom_objects=custom_objects)


def test_registry_has_the_six_architectures() -> None:
    assert {"fnn", "cnn", "rnn", "lstm", "gan", "seq2seq"} <= set(REGISTRY)


@pytest.mark.parametrize(("name", "kind", "task"), all_cases())
def test_builds_named_uncompiled_model_with_right_output_shape(
    name: str, kind: str, task: str
) -> None:
    spec = data_spec(kind, task)
    model = build(name, spec)
    assert model.name == name
    assert not model.compiled
    if REGISTRY[name].generative:
        assert model.generator.output_shape == (None, *spec.input_shape)
        assert model.discriminator.output_shape == (None, 1)
    elif spec.kind == "translation":  # a subclassed model: its output shape from a call
        x, _ = synthetic(spec)
        assert (None, *model(x[:2]).shape[1:]) == expected_output_shape(spec)
    else:
        assert model.output_shape == expected_output_shape(spec)


@pytest.mark.parametrize(("name", "kind", "task"), train_cases())
def test_trains_one_epoch_and_round_trips_through_keras_file(
    name: str, kind: str, task: str, tmp_path: Path
) -> None:
    model_spec, spec = REGISTRY[name], data_spec(kind, task)
    x, y = synthetic(spec)
    model = build(name, spec)
    compile_for(model, spec)
    if model_spec.generative:
        history = model.fit(x, validation_data=(x,), epochs=1, batch_size=16, verbose=0).history
        assert set(history) == {"d_loss", "g_loss", "val_d_loss", "val_g_loss"}
    else:
        history = model.fit(x, y, validation_data=(x, y), epochs=1, batch_size=16, verbose=0)
        history = history.history
    assert all(np.isfinite(values).all() for values in history.values())

    model.save(tmp_path / "model.keras")
    loaded = load(tmp_path / "model.keras", model_spec)
    assert loaded.name == name
    if model_spec.generative:
        noise = np.random.default_rng(1).normal(size=(4, model.latent_dim)).astype(np.float32)
        np.testing.assert_array_equal(model.generator(noise), loaded.generator(noise))
        np.testing.assert_array_equal(model.sample(4, seed=3), loaded.sample(4, seed=3))
    else:
        np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def fit_compiled_by_deepfit(
    name: str, kind: str, task: str, count: list | None = None
) -> keras.Model:
    """The model of ``name`` compiled by the training loop's ``compile_model`` and fitted for
    two epochs; each trace of its training step appends to ``count``."""
    from deepfit.config import TrainConfig
    from deepfit.train.loop import compile_model

    model_spec, spec = REGISTRY[name], data_spec(kind, task)
    x, y = synthetic(spec)
    model = build(name, spec)
    cfg = TrainConfig(epochs=2, batch_size=16)
    compile_model(model, spec, cfg, steps_per_epoch=2, generative=model_spec.generative)
    if count is not None:
        step = model.train_step

        def counted(data: typing.Any) -> typing.Any:
            count.append(1)  # Python code of a compiled step runs only while it is traced
            return step(data)

        model.train_step = counted
    inputs = (x,) if model_spec.generative else (x, y)
    model.fit(*inputs, epochs=2, batch_size=16, shuffle=False, verbose=0)
    return model


@pytest.mark.parametrize(("name", "kind", "task"), train_cases())
def test_the_training_step_is_traced_once(name: str, kind: str, task: str) -> None:
    """compile_model creates the optimizer's variables before fit; created inside the first
    trace, they make TensorFlow trace the whole step a second time."""
    traces: list = []
    fit_compiled_by_deepfit(name, kind, task, traces)
    assert len(traces) == 1


@pytest.mark.parametrize(
    ("name", "kind", "task"),
    [
        ("fnn", "image", "classification"),
        ("lstm", "sequence", "regression"),
        ("gan", "image", "classification"),
    ],
)
def test_variables_made_before_fit_train_the_same_weights(
    name: str, kind: str, task: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deepfit.train.loop as loop

    early = fit_compiled_by_deepfit(name, kind, task)
    monkeypatch.setattr(loop, "build_training_state", lambda model, generative: None)
    lazy = fit_compiled_by_deepfit(name, kind, task)  # Keras makes them in the first step
    for a, b in zip(early.weights, lazy.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_same_seed_same_weights_other_seed_other_weights(name: str) -> None:
    model_spec = REGISTRY[name]
    kind = sorted(model_spec.input_kinds)[0]
    spec = data_spec(kind, sorted(model_spec.tasks)[0])
    first, again, other = (build(name, spec, seed).get_weights() for seed in (1, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


# --- config validation ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_defaults_form_a_valid_config(name: str) -> None:
    REGISTRY[name].config()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_unknown_key_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match="unitz"):
        REGISTRY[name].config(unitz=[8])


# Architectures with an activation key (an encoder-decoder's LSTMs keep Keras' own).
WITH_ACTIVATION = sorted(n for n, s in REGISTRY.items() if "activation" in s.config.model_fields)


@pytest.mark.parametrize("name", WITH_ACTIVATION)
def test_unknown_activation_rejected_listing_the_allowed_names(name: str) -> None:
    with pytest.raises(ValidationError) as error:
        REGISTRY[name].config(activation="relux")
    assert all(allowed in str(error.value) for allowed in typing.get_args(Activation))


@pytest.mark.parametrize("name", WITH_ACTIVATION)
def test_activation_list_of_wrong_length_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match=r"expected one name or a list of \d+ names"):
        REGISTRY[name].config(activation=["relu"] * 9)


def regularisation_cases() -> list[tuple[str, str, float]]:
    bad_values = [("dropout", 1.0), ("dropout", -0.1), ("l2", -1e-4)]
    return [
        (name, key, value)
        for name, spec in REGISTRY.items()
        for key, value in bad_values
        if key in spec.config.model_fields
    ]


@pytest.mark.parametrize(("name", "key", "value"), regularisation_cases())
def test_out_of_range_regularisation_rejected(name: str, key: str, value: float) -> None:
    with pytest.raises(ValidationError, match=key):
        REGISTRY[name].config(**{key: value})


@pytest.mark.parametrize(("name", "key"), [("fnn", "units"), ("cnn", "filters"), ("lstm", "units")])
def test_layer_sizes_must_be_positive_and_non_empty(name: str, key: str) -> None:
    for bad in ([], [16, 0]):
        with pytest.raises(ValidationError, match=key):
            REGISTRY[name].config(**{key: bad})


def test_one_activation_per_layer_is_used_in_order() -> None:
    model = build(
        "fnn", data_spec("vector", "regression"), units=[4, 4], activation=["tanh", "elu"]
    )
    names = [layer.name for layer in model.layers]
    assert names.index("hidden_1_tanh") < names.index("hidden_2_elu")


def test_every_activation_name_resolves_in_keras() -> None:
    for name in typing.get_args(Activation):
        assert callable(keras.activations.get(name)), name


def test_validating_configs_does_not_import_keras() -> None:
    code = textwrap.dedent(
        """
        import sys
        from deepfit.models import REGISTRY
        for spec in REGISTRY.values():
            spec.config()
        assert "keras" not in sys.modules and "tensorflow" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- GAN specifics --------------------------------------------------------------------------


def test_gan_samples_are_images_and_fixed_by_the_seed() -> None:
    from deepfit.models.gan_network import GAN

    gan = build("gan", data_spec("image", "classification"))
    assert type(gan) is GAN  # the module-level Keras class
    first, again, other = gan.sample(6, seed=5), gan.sample(6, seed=5), gan.sample(6, seed=6)
    assert first.shape == (6, *SHAPES["image"])
    assert ((first >= 0) & (first <= 1)).all()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_saved_gan_loads_in_a_fresh_process(tmp_path: Path) -> None:
    gan = build("gan", data_spec("image", "classification"))
    gan.save(tmp_path / "gan.keras")
    np.save(tmp_path / "expected.npy", gan.sample(3, seed=9))
    code = textwrap.dedent(
        f"""
        import keras, numpy as np
        from deepfit.models import gan
        from deepfit.models.gan_network import GAN
        model = keras.models.load_model({str(tmp_path / "gan.keras")!r},
                                        custom_objects=gan.custom_objects())
        assert type(model) is GAN
        expected = np.load({str(tmp_path / "expected.npy")!r})
        np.testing.assert_array_equal(model.sample(3, seed=9), expected)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def _layer_types(model: keras.Model) -> set[str]:
    return {type(layer).__name__ for layer in model.layers}


@pytest.mark.parametrize(
    ("shape", "network", "kind"),
    [
        ((8, 8, 1), "auto", "mlp"),  # the digits: small images stay dense
        ((16, 16, 3), "auto", "conv"),
        ((18, 14, 3), "auto", "conv"),  # sizes the doublings overshoot are cropped
        ((8, 8, 1), "conv", "conv"),
        ((16, 16, 3), "mlp", "mlp"),
    ],
)
def test_gan_network_follows_image_size_or_params(shape, network, kind) -> None:
    """`network: auto` builds DCGAN convolutions for images larger than 8x8, dense layers for
    smaller ones; `mlp` and `conv` force either. Samples have the images' shape and range."""
    gan = build("gan", DataSpec(shape, "image", "classification", 3), network=network)
    conv = {"Conv2DTranspose", "Conv2D"} <= _layer_types(gan.generator)
    assert conv == (kind == "conv")
    assert ("Conv2D" in _layer_types(gan.discriminator)) == (kind == "conv")
    samples = gan.sample(4, seed=1)
    assert samples.shape == (4, *shape) and ((samples >= 0) & (samples <= 1)).all()
    assert gan.discriminator(samples).shape == (4, 1)


def test_conv_gan_trains_on_images_of_an_odd_size() -> None:
    shape = (18, 14, 3)  # the generator's doublings overshoot to 20x16 and are cropped
    spec = DataSpec(shape, "image", "classification", 3)
    gan = build("gan", spec, generator_filters=[16, 8])
    compile_for(gan, spec)
    images = np.random.default_rng(0).uniform(0, 1, size=(N_SAMPLES, *shape)).astype("float32")
    history = gan.fit(images, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["d_loss"][0]) and np.isfinite(history["g_loss"][0])
    assert gan.sample(2, seed=1).shape == (2, *shape)


def test_conv_gan_round_trips_through_keras_file(tmp_path: Path) -> None:
    from deepfit.models import gan as gan_module

    gan = build("gan", DataSpec((16, 16, 3), "image", "classification", 3))
    gan.save(tmp_path / "gan.keras")
    loaded = keras.saving.load_model(
        tmp_path / "gan.keras", custom_objects=gan_module.custom_objects()
    )
    np.testing.assert_array_equal(loaded.sample(3, seed=9), gan.sample(3, seed=9))


def test_gan_activation_list_is_checked_against_the_network_it_names() -> None:
    config = REGISTRY["gan"].config
    config(network="conv", generator_filters=[8], activation=["relu", "elu", "elu"])
    with pytest.raises(ValidationError, match="generator_filters \\+ discriminator_filters"):
        config(network="conv", activation=["relu"] * 3)
    with pytest.raises(ValidationError, match="generator_units \\+ discriminator_units"):
        config(network="mlp", activation=["relu"] * 3)
    with pytest.raises(ValidationError, match="network"):
        config(network="dcgan")
