"""Augmentations of one input against numpy and torch, drawn only from the rng, shapes kept, new every epoch in the
trainer. (Their bits for any worker count and after a resume: test_bit_identity.py, test_resume.py.)"""
import math
import pickle
import random

import numpy as np
import pytest

from helpers_parallel import tiny_dataset, train_sha
from minigrad.data import load_mnist5k
from minigrad.data.augment import (AUGMENTATIONS, BACKGROUND, elastic, rotation, shift, shift_rotate, translate,
                                   warp)
from parallel.replica import sample_rng

RANDOM_AUGMENTATIONS = [name for name, fn in AUGMENTATIONS.items() if fn is not None]


def image(channels=2, rows=5, cols=7, seed=0):
    return np.random.default_rng(seed).normal(size=(channels, rows, cols))


def rolled(x, dx, dy, fill):
    """The numpy reference of a translation: np.roll, then ``fill`` over what wrapped around."""
    out = np.roll(x, (dy, dx), axis=(1, 2))
    rows, cols = x.shape[1:]
    out[:, :dy, :] = fill if dy > 0 else out[:, :dy, :]
    out[:, rows + dy:, :] = fill if dy < 0 else out[:, rows + dy:, :]
    out[:, :, :dx] = fill if dx > 0 else out[:, :, :dx]
    out[:, :, cols + dx:] = fill if dx < 0 else out[:, :, cols + dx:]
    return out


@pytest.mark.parametrize("dx", [-3, -1, 0, 1, 2])
@pytest.mark.parametrize("dy", [-2, -1, 0, 1, 4])
def test_translate_matches_numpy_roll_and_fill(dx, dy):
    x = image()
    assert np.array_equal(np.array(translate(x.tolist(), dx, dy, fill=-7.0)), rolled(x, dx, dy, -7.0))


@pytest.mark.parametrize("dx, dy", [(7, 0), (0, -5), (-9, 9)])
def test_translate_beyond_the_image_leaves_only_fill(dx, dy):
    assert np.array_equal(np.array(translate(image().tolist(), dx, dy, fill=3.0)), np.full((2, 5, 7), 3.0))


def test_background_is_a_blank_pixel_after_preprocessing():
    corners = load_mnist5k("test").images[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.allclose(corners, BACKGROUND, rtol=0, atol=1e-15)


def test_shift_draws_offsets_in_range_from_the_rng():
    x = image(1, 15, 15)
    seen = set()
    for seed in range(200):
        rng = random.Random(seed)
        dx, dy = rng.randint(-1, 1), rng.randint(-1, 1)
        assert np.array_equal(np.array(shift(x.tolist(), random.Random(seed))), rolled(x, dx, dy, BACKGROUND))
        seen.add((dx, dy))
    assert seen == {(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)}


@pytest.mark.parametrize("name", RANDOM_AUGMENTATIONS)
def test_same_rng_same_output_and_shape_kept_input_untouched(name):
    fn = AUGMENTATIONS[name]
    x = image(2, 6, 9)
    before = x.tolist()
    outputs = [fn(x.tolist(), sample_rng(0, epoch, 3)) for epoch in (0, 0, 1, 2, 3, 4)]
    assert outputs[0] == outputs[1]
    assert np.array(outputs[0]).shape == (2, 6, 9)
    assert all(isinstance(v, float) for channel in outputs[0] for row in channel for v in row)
    assert any(out != outputs[0] for out in outputs[2:]), "five epochs all drew the same augmentation"
    assert x.tolist() == before


@pytest.mark.parametrize("name", RANDOM_AUGMENTATIONS)
def test_augmentations_are_module_functions_workers_can_import(name):
    fn = AUGMENTATIONS[name]
    assert pickle.loads(pickle.dumps(fn)) is fn


def test_none_is_no_augmentation():
    assert AUGMENTATIONS["none"] is None


def test_rotation_by_zero_is_the_identity_and_by_90_degrees_is_rot90():
    x = image(2, 7, 7)
    assert np.array_equal(np.array(rotation(x.tolist(), 0.0)), x)
    assert np.allclose(np.array(rotation(x.tolist(), 90.0)), np.rot90(x, 1, axes=(1, 2)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dx, dy", [(1, -1), (-2, 0), (0, 3)])
def test_rotation_by_zero_with_a_whole_pixel_move_is_translate(dx, dy):
    x = image(1, 9, 9)
    assert np.array_equal(np.array(rotation(x.tolist(), 0.0, dx, dy)), np.array(translate(x.tolist(), dx, dy)))


def torch_affine(torch, x, theta, fill):
    """torch's bilinear resampling of ``x`` (C, n, n) under ``theta`` (normalised, corners aligned),
    ``fill`` outside."""
    F = torch.nn.functional
    t = torch.tensor(x - fill, dtype=torch.float64)[None]
    grid = F.affine_grid(torch.tensor([theta], dtype=torch.float64), list(t.shape), align_corners=True)
    return F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0].numpy() + fill


@pytest.mark.parametrize("degrees, dx, dy", [(7.5, 0.0, 0.0), (-13.0, 0.0, 0.0), (40.0, 0.0, 0.0),
                                             (0.0, 0.4, -0.7), (0.0, 2.5, 1.25)])
def test_rotation_matches_torch_grid_sample(torch, degrees, dx, dy):
    x = image(2, 15, 15, seed=4)
    centre = 7.0
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    theta = [[cos, -sin, -dx / centre], [sin, cos, -dy / centre]]
    got = np.array(rotation(x.tolist(), degrees, dx, dy))
    assert np.allclose(got, torch_affine(torch, x, theta, BACKGROUND), rtol=0, atol=1e-12)


def test_warp_reads_fill_outside_and_blends_at_the_edge():
    x = [[[1.0, 2.0], [3.0, 4.0]]]
    assert warp(x, [(r - 5.0, c) for r in range(2) for c in range(2)], fill=-1.0) == [[[-1.0, -1.0], [-1.0, -1.0]]]
    assert warp(x, [(r - 0.5, c) for r in range(2) for c in range(2)], fill=0.0) == [[[0.5, 1.0], [2.0, 3.0]]]


def test_elastic_without_movement_is_the_identity_and_stays_within_the_pixel_range():
    x = image(1, 15, 15, seed=2)
    assert np.array_equal(np.array(elastic(x.tolist(), random.Random(0), pixels=0.0)), x)
    low, high = min(x.min(), BACKGROUND), max(x.max(), BACKGROUND)
    for seed in range(20):
        out = np.array(elastic(x.tolist(), random.Random(seed)))
        assert low - 1e-12 <= out.min() and out.max() <= high + 1e-12
        assert not np.array_equal(out, x)


@pytest.mark.parametrize("fn, options, message", [
    (elastic, {"grid": 1}, "Expected grid to be an integer >= 2, got 1"),
    (elastic, {"grid": 2.5}, "Expected grid to be an integer >= 2, got 2.5"),
    (shift, {"pixels": -1}, "Expected pixels to be an integer >= 0, got -1"),
    (shift_rotate, {"pixels": 0.5}, "Expected pixels to be an integer >= 0, got 0.5"),
])
def test_bad_options_say_expected_and_got(fn, options, message):
    with pytest.raises(ValueError, match=message):
        fn(image().tolist(), random.Random(0), **options)


def test_shift_rotate_moves_by_whole_pixels_when_it_draws_no_turn():
    x = image(1, 15, 15, seed=5)
    out = np.array(shift_rotate(x.tolist(), random.Random(8), degrees=0.0))
    rng = random.Random(8)
    dx, dy = rng.randint(-1, 1), rng.randint(-1, 1)
    assert np.array_equal(out, rolled(x, dx, dy, BACKGROUND))


# ---- through the trainer ----

def test_each_epoch_trains_on_new_augmented_inputs():
    data = tiny_dataset()
    first_pixel = {float(x[0, 0, 0]): i for i, x in enumerate(data.images)}
    seen = []  # (index, augmented input), in training order

    def recording_shift(x, rng):
        out = shift(x, rng)
        seen.append((first_pixel[x[0][0][0]], out))
        return out
    train_sha(0, dataset=data, steps=16, batch_size=5, augment_fn=recording_shift)  # two epochs of 40
    epochs = [dict(seen[:40]), dict(seen[40:])]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(40))
    changed = sum(epochs[0][i] != epochs[1][i] for i in range(40))
    assert changed >= 30, f"only {changed} of 40 inputs changed between epochs"
