"""`data=npz` larger than memory: uncompressed .npz members and .npy pairs memory-mapped, never read whole."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from dlrun.data import lazy
from dlrun.data.lazy import MemmapFeatures, materialize
from dlrun.data.sources import DATASETS
from dlrun.errors import DataError


def _raw(**options):
    return DATASETS.get("npz").builder(**DATASETS.bind("npz", options, "data"))


@pytest.fixture
def images(tmp_path):
    """Seeded (N, C, H, W) float64 features and string labels, saved three ways."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3, 4, 4))
    y = np.array(["cat", "dog", "emu"])[np.arange(300) % 3]
    np.savez(tmp_path / "plain.npz", y=y, extra=np.ones(7), x=x)  # x not the first member: its offset matters
    np.savez_compressed(tmp_path / "packed.npz", x=x, y=y)
    np.save(tmp_path / "features.npy", x)
    np.save(tmp_path / "labels.npy", y)
    return tmp_path, x, y


def test_an_uncompressed_archive_is_mapped_and_reads_the_same_rows_as_in_memory(images):
    folder, x, _ = images
    mapped = _raw(path=str(folder / "plain.npz"), in_memory=False)
    loaded = _raw(path=str(folder / "plain.npz"), in_memory=True)
    assert isinstance(mapped.x, MemmapFeatures) and isinstance(loaded.x, np.ndarray)
    assert isinstance(mapped.x._array, np.memmap) and mapped.x.shape == (300, 48)
    np.testing.assert_array_equal(materialize(mapped.x), loaded.x)
    np.testing.assert_array_equal(loaded.x, x.reshape(300, -1).astype(np.float32))
    assert (mapped.sample_shape, mapped.image, mapped.class_names) == ((3, 4, 4), True, ["cat", "dog", "emu"])
    np.testing.assert_array_equal(mapped.y, loaded.y)


def test_a_mapped_archive_travels_to_a_worker_as_its_path_and_offset(images):
    folder, x, _ = images
    features = _raw(path=str(folder / "plain.npz"), in_memory=False).x
    shipped = pickle.dumps(features)
    assert len(shipped) < 1000  # the map is reopened, not copied
    rows = np.array([299, 0, 150, 0])
    np.testing.assert_array_equal(pickle.loads(shipped).rows(rows), x.reshape(300, -1)[rows].astype(np.float32))


def test_a_npy_pair_is_mapped_with_its_targets_in_memory(images):
    folder, x, _ = images
    options = {"path": str(folder / "features.npy"), "y_path": str(folder / "labels.npy")}
    mapped, loaded = _raw(**options, in_memory=False), _raw(**options)
    assert isinstance(mapped.x, MemmapFeatures) and isinstance(loaded.x, np.ndarray)
    np.testing.assert_array_equal(materialize(pickle.loads(pickle.dumps(mapped.x))), x.reshape(300, -1).astype(np.float32))
    assert mapped.class_names == loaded.class_names == ["cat", "dog", "emu"] and mapped.y.tolist() == loaded.y.tolist()


def test_auto_maps_beyond_the_limit_and_loads_a_compressed_archive(images, monkeypatch):
    folder, _, _ = images
    assert isinstance(_raw(path=str(folder / "plain.npz")).x, np.ndarray)  # small: in memory
    monkeypatch.setattr(lazy, "IN_MEMORY_LIMIT_BYTES", 1000)
    assert isinstance(_raw(path=str(folder / "plain.npz")).x, MemmapFeatures)
    assert isinstance(_raw(path=str(folder / "features.npy"), y_path=str(folder / "labels.npy")).x, MemmapFeatures)
    assert isinstance(_raw(path=str(folder / "packed.npz")).x, np.ndarray)  # cannot be mapped: read whole


def test_a_compressed_archive_with_in_memory_false_says_how_to_save_it(images):
    with pytest.raises(DataError) as info:
        _raw(path=str(images[0] / "packed.npz"), in_memory=False)
    message = str(info.value)
    assert "packed.npz" in message and "savez_compressed" in message and "numpy.savez" in message
    assert "data.y_path" in message and "data.in_memory=auto" in message


def test_a_fortran_ordered_archive_is_read_in_memory_or_refused(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.asfortranarray(np.arange(40.0).reshape(20, 2)), y=np.arange(20) % 2)
    assert isinstance(_raw(path=str(tmp_path / "f.npz")).x, np.ndarray)
    with pytest.raises(DataError, match="Fortran"):
        _raw(path=str(tmp_path / "f.npz"), in_memory=False)


@pytest.mark.parametrize("in_memory", [True, False])
def test_an_archive_with_bytes_in_front_or_objects_says_what_is_wrong_with_the_file(tmp_path, in_memory):
    np.savez(tmp_path / "good.npz", x=np.ones((20, 2)), y=np.arange(20) % 2)
    (tmp_path / "front.npz").write_bytes(b"#header\n" + (tmp_path / "good.npz").read_bytes())
    np.savez(tmp_path / "objects.npz", x=np.array([{}, {}] * 10, dtype=object), y=np.arange(20) % 2)
    messages = []
    for name in ("front.npz", "objects.npz"):
        with pytest.raises(DataError) as error:
            _raw(path=str(tmp_path / name), in_memory=in_memory)
        messages.append(str(error.value))
    assert "a zip archive with other bytes in front of it" in messages[0]
    assert "Python objects (pickled data), which dlrun does not load" in messages[1]
    for message in messages:  # nothing of allow_pickle, which a user cannot set; one period per sentence
        assert "pickle" not in message.replace("pickled data", "") and ".." not in message, message


def test_non_finite_features_are_found_chunk_by_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(lazy, "CHUNK_ROWS", 16)
    x = np.ones((100, 2))
    x[97, 1] = np.inf  # in the last chunk
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(100) % 2)
    with pytest.raises(DataError, match="'x' holds NaN, infinite or too large values"):
        _raw(path=str(tmp_path / "d.npz"), in_memory=False)
    np.savez(tmp_path / "big.npz", x=np.full((100, 2), 1e300), y=np.arange(100) % 2)  # finite, beyond float32
    with pytest.raises(DataError, match="beyond float32"):
        _raw(path=str(tmp_path / "big.npz"), in_memory=False)


def test_a_npy_file_without_targets_names_data_y_path(images):
    folder = images[0]
    with pytest.raises(DataError, match="holds a single array .* data.y_path=TARGETS.npy"):
        _raw(path=str(folder / "features.npy"))
    with pytest.raises(DataError, match="data.y_path: no file at"):
        _raw(path=str(folder / "features.npy"), y_path=str(folder / "none.npy"))
    with pytest.raises(DataError, match="data.y_path: cannot read .*plain.npz.* as a NumPy .npy file"):
        _raw(path=str(folder / "features.npy"), y_path=str(folder / "plain.npz"))
    np.save(folder / "short.npy", np.arange(299) % 2)
    with pytest.raises(DataError, match="'features.npy' has 300 samples .* 'short.npy' has 299"):
        _raw(path=str(folder / "features.npy"), y_path=str(folder / "short.npy"), in_memory=False)


def test_mapped_features_prepare_the_bundle_the_in_memory_path_prepares(images):
    import torch

    from dlrun.data.prepare import load_data

    config = {"name": "npz", "batch_size": 16, "val_fraction": 0.2, "test_fraction": 0.2,
              "path": str(images[0] / "plain.npz")}
    mapped, loaded = load_data({**config, "in_memory": False}, 0), load_data({**config, "in_memory": True}, 0)
    assert mapped.fingerprint == loaded.fingerprint and mapped.class_names == loaded.class_names
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(mapped.split_rows[split], loaded.split_rows[split])
        streamed, held = getattr(mapped, f"x_{split}"), getattr(loaded, f"x_{split}")
        assert not isinstance(streamed, torch.Tensor)
        torch.testing.assert_close(streamed[np.arange(len(streamed))], held, rtol=1e-6, atol=1e-6)
