"""The augment group: whole-batch transforms of training inputs, repeatable under a seed."""

from __future__ import annotations

import pytest
import torch

from dlrun.data.augment import AUGMENTS
from dlrun.data.loader import BatchLoader
from dlrun.errors import ConfigError

IMAGE = (1, 8, 10)  # (channels, height, width); not square, to catch height/width mix-ups
GEOMETRIC = ["flip", "rotate", "scale", "basic"]


def _build(name: str, sample_shape=IMAGE, **options):
    return AUGMENTS.get(name).builder(sample_shape, **AUGMENTS.bind(name, options, "augment"))


def _batch(n: int = 16, shape=IMAGE) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_every_option_is_registered():
    assert set(AUGMENTS.names()) == {"none", "flip", "rotate", "scale", "noise", "basic"}
    assert _build("none") is None


@pytest.mark.parametrize("name", GEOMETRIC + ["noise"])
def test_keeps_shape_and_dtype_and_changes_the_batch(name):
    x = _batch()
    out = _build(name)(x, _seeded(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", GEOMETRIC + ["noise"])
def test_repeatable_under_a_seed_and_different_across_seeds(name):
    augment, x = _build(name), _batch()
    torch.testing.assert_close(augment(x, _seeded(5)), augment(x, _seeded(5)), rtol=0, atol=0)
    assert not torch.equal(augment(x, _seeded(5)), augment(x, _seeded(6)))


def test_does_not_touch_the_global_rng_or_the_input():
    x = _batch()
    before = x.clone()
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    _build("basic")(x, _seeded(0))
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(x, before)


def _arrow(n: int) -> torch.Tensor:
    """n copies of an asymmetric image: a bright top-left corner."""
    image = torch.zeros(1, 8, 10)
    image[0, :2, :3] = 1.0
    return image.expand(n, -1, -1, -1).clone()


@pytest.mark.parametrize("horizontal,vertical,dims", [(True, False, [-1]), (False, True, [-2]), (True, True, [-1, -2])])
def test_flip_mirrors_about_half_the_samples(horizontal, vertical, dims):
    x = _arrow(64)
    out = _build("flip", horizontal=horizontal, vertical=vertical)(x, _seeded(0))
    mirrors = [x[0]]  # each sample is the image or one of its mirrors
    for dim in dims:
        mirrors += [m.flip(dim) for m in mirrors]
    matches = [[torch.equal(sample, m) for m in mirrors] for sample in out]
    assert all(any(row) for row in matches)
    unchanged = sum(row[0] for row in matches)
    assert 0 < unchanged < 64
    if dims == [-1]:
        assert 16 < unchanged < 48  # each flipped with probability 0.5


def test_flip_with_nothing_to_flip_is_no_augmentation():
    assert _build("flip", horizontal=False, vertical=False) is None


def test_rotate_by_zero_and_scale_by_one_are_the_identity():
    x = _batch()
    torch.testing.assert_close(_build("rotate", degrees=0.0)(x, _seeded(0)), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(_build("scale", min=1.0, max=1.0)(x, _seeded(0)), x, rtol=0, atol=1e-5)


def test_scale_above_one_zooms_in():
    image = torch.zeros(4, 1, 16, 16)
    image[:, :, 6:10, 6:10] = 1.0  # a bright square in the centre
    zoomed = _build("scale", min=2.0, max=2.0)(image, _seeded(0))
    assert zoomed.sum() > 3 * image.sum()  # the square grows about four times


def test_rotate_keeps_a_centred_disc_in_place():
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    disc = (((rows - 7.5) ** 2 + (cols - 7.5) ** 2) < 16).float().expand(8, 1, 16, 16)
    rotated = _build("rotate", degrees=180.0)(disc, _seeded(0))
    assert (rotated - disc).abs().mean() < 0.05


def test_rotation_is_rigid_on_non_square_images(monkeypatch):
    import dlrun.data.augment as augment_module

    # Pin the draw to the top of each range: an angle of exactly +90 degrees.
    monkeypatch.setattr(augment_module, "_uniform", lambda generator, n, low, high: torch.full((n,), high, dtype=torch.float64))
    image = torch.zeros(1, 1, 9, 15)
    image[0, 0, 4, 5:10] = 1.0  # a horizontal bar of 5 pixels through the centre
    rotated = _build("rotate", sample_shape=(1, 9, 15), degrees=90.0)(image, _seeded(0))[0, 0] > 0.5
    assert rotated.sum() == 5 and rotated[:, 7].sum() == 5  # a vertical bar of 5 pixels, not squashed


def test_noise_has_the_configured_spread_and_works_on_tabular_data():
    x = torch.zeros(4000, 5)
    out = _build("noise", sample_shape=(5,), std=0.5)(x, _seeded(0))
    assert abs(out.std().item() - 0.5) < 0.02 and abs(out.mean().item()) < 0.02
    assert _build("noise", sample_shape=(5,), std=0.0) is None


@pytest.mark.parametrize("name", GEOMETRIC)
@pytest.mark.parametrize("shape", [(4,), (20, 3)])
def test_geometric_augmentations_refuse_non_image_data(name, shape):
    with pytest.raises(ConfigError) as info:
        _build(name, sample_shape=shape)
    assert f"augment={name}" in str(info.value) and str(shape) in str(info.value) and "augment=noise" in str(info.value)


def test_zoom_range_must_be_ordered():
    with pytest.raises(ConfigError, match=r"augment.min \(1.5\) is above augment.max \(1.2\)"):
        _build("scale", min=1.5, max=1.2)


@pytest.mark.parametrize("name,options,fragment", [
    ("rotate", {"degrees": 200}, "'augment.degrees' must be at most 180"),
    ("scale", {"min": 0}, "'augment.min' must be greater than 0"),
    ("noise", {"std": -1}, "'augment.std' must be at least 0"),
    ("flip", {"horizontal": "yes"}, "'augment.horizontal' must be true or false"),
    ("noise", {"sd": 0.1}, "Did you mean 'std'?"),
])
def test_options_are_checked_by_the_registry(name, options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        AUGMENTS.bind(name, options, "augment")


# --- in the loader: training batches only -------------------------------------------------


def _rows(n: int = 40):
    x = _batch(n)
    return x, torch.arange(n)


def _pass(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_training_batches_are_augmented_and_held_out_batches_are_not():
    x, y = _rows()
    augment = _build("basic")
    train = BatchLoader(x, y, 8, shuffle=True, seed=0, augment=augment)
    held_out = BatchLoader(x, y, 8, shuffle=False)  # how run.py builds val and test
    for inputs, rows in _pass(train):
        assert inputs.shape == x[rows].shape and not torch.equal(inputs, x[rows])
    for inputs, rows in _pass(held_out):
        assert torch.equal(inputs, x[rows])


def _by_row(batches) -> dict[int, torch.Tensor]:
    return {int(row): inputs for xs, rows in batches for inputs, row in zip(xs, rows)}


def test_augmented_batches_are_repeatable_under_the_seed_and_change_each_epoch():
    x, y = _rows()
    a, b, other = (BatchLoader(x, y, 8, shuffle=True, seed=seed, augment=_build("noise")) for seed in (3, 3, 4))
    first_a, first_b = _pass(a), _pass(b)
    for (xa, ya), (xb, yb) in zip(first_a, first_b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    epoch_one, other_seed, epoch_two = _by_row(first_a), _by_row(_pass(other)), _by_row(_pass(b))
    assert all(not torch.equal(epoch_one[r], other_seed[r]) for r in epoch_one)
    assert all(not torch.equal(epoch_one[r], epoch_two[r]) for r in epoch_one)  # new noise each epoch
