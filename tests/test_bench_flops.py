"""The P6 benchmark's analytic FLOP counter on small models whose counts are derived by hand.

Forward FLOPs of a Dense or Conv layer are 2 per multiply-add. A training step costs the forward
pass, the weight gradient (same cost, if the layer is trainable) and the input gradient (same
cost, only if a trainable layer lies upstream).
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import pytest

from deepfit.models.base import DataSpec
from deepfit.models.cnn import CNNConfig, build

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from flops import cnn_step_flops


def functional(input_shape: tuple[int, ...], *layers: keras.layers.Layer) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def test_one_dense_layer_needs_no_input_gradient() -> None:
    # forward 2*5*3 = 30 per sample; + weight gradient 30 = 60; batch 4 -> 240
    model = functional((5,), keras.layers.Dense(3))
    assert cnn_step_flops(model, batch=4) == 240


def test_second_dense_layer_costs_three_forward_passes() -> None:
    # first: 2 * (2*5*3) = 60; second: 3 * (2*3*2) = 36; 96 per sample, batch 4 -> 384
    model = functional((5,), keras.layers.Dense(3), keras.layers.Dense(2))
    assert cnn_step_flops(model, batch=4) == 384


def test_one_conv2d_layer() -> None:
    # 6x6x2 input, 4 filters 3x3 valid -> 4x4x4 output;
    # forward 2*(4*4)*(3*3)*2*4 = 2304 per sample, + weight gradient = 4608; batch 3 -> 13824
    model = functional((6, 6, 2), keras.layers.Conv2D(4, 3))
    assert cnn_step_flops(model, batch=3) == 13824


def test_same_padding_and_strides() -> None:
    # conv 1: 8x8x1 -> 8x8x2 (same): forward 2*64*9*1*2 = 2304, x2 (first layer) = 4608
    # conv 2: 8x8x2 -> 3x3x3 (3x3, stride 2, valid): forward 2*9*9*2*3 = 972, x3 = 2916
    # 7524 per sample, batch 2 -> 15048
    model = functional(
        (8, 8, 1),
        keras.layers.Conv2D(2, 3, padding="same"),
        keras.layers.Conv2D(3, 3, strides=2),
    )
    assert cnn_step_flops(model, batch=2) == 15048


def test_frozen_layer_needs_no_weight_gradient_and_frees_the_next_from_input_gradient() -> None:
    # frozen Dense(5->3): forward only, 30; Dense(3->2): forward + weight gradient, 2*12 = 24
    model = functional((5,), keras.layers.Dense(3, trainable=False), keras.layers.Dense(2))
    assert cnn_step_flops(model, batch=1) == 54


def test_sequential_model() -> None:
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    assert cnn_step_flops(model, batch=4) == 384


def test_default_pipeline_cnn() -> None:
    # filters [32, 64], 3x3 same, pooling 8->4->2, dense [128], 10 classes; per sample:
    # conv_1 8x8x1 -> 8x8x32:  forward 2*64*9*1*32   =  36864, x2 =    73728
    # conv_2 4x4x32 -> 4x4x64: forward 2*16*9*32*64  = 589824, x3 =  1769472
    # dense_1 2*2*64 -> 128:   forward 2*256*128     =  65536, x3 =   196608
    # output 128 -> 10:        forward 2*128*10      =   2560, x3 =     7680
    # total 2047488 per sample; batch 512 -> 1048313856
    model = build(CNNConfig(), DataSpec((8, 8, 1), "image", "classification", 10))
    assert cnn_step_flops(model, batch=512) == 2_047_488 * 512


def test_unknown_weighted_layer_is_refused() -> None:
    model = functional((6, 4), keras.layers.SimpleRNN(2))
    with pytest.raises(ValueError, match="cannot count"):
        cnn_step_flops(model, batch=1)
