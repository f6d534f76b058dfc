"""Streamed data: image_folder's ImageFiles, the chunked scaling pass, LazySplit and StreamingLoader.

Streaming must change nothing but where the rows come from: the same scaling as data held in
memory, the same batches in the same order (whatever the number of workers), the same position
to resume from, and a file that cannot be read is a DataError naming it, never a worker's traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from dlrun.config.compose import compose
from dlrun.config.validate import validate
from dlrun.data import lazy
from dlrun.data.augment import AUGMENTS
from dlrun.data.image_files import ImageFiles
from dlrun.data.loader import BatchLoader
from dlrun.data.prepare import _bundle, _scaling, load_data, split_indices
from dlrun.data.raw import RawData
from dlrun.data.sources import DATASETS
from dlrun.data.streaming import LazySplit, StreamingLoader, resolve_num_workers
from dlrun.errors import ConfigError, DataError
from dlrun.lifecycle.evaluate import _predicted


def _images(root, per_class=10, size=(5, 4), seed=0):
    """root/{a,b}/i.png, RGB, random pixels; size is (width, height)."""
    rng = np.random.default_rng(seed)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3)).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _image_folder(root, **options):
    return DATASETS.get("image_folder").builder(**DATASETS.bind("image_folder", {"path": str(root), **options}, "data"))


def _cfg(root, in_memory, num_workers=0) -> dict:
    return {"name": "image_folder", "path": str(root), "in_memory": in_memory, "batch_size": 4,
            "val_fraction": 0.2, "test_fraction": 0.2, "num_workers": num_workers}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return _images(tmp_path_factory.mktemp("streaming") / "imgs")


# --- image_folder streams ------------------------------------------------------------------


def test_streamed_image_rows_are_the_in_memory_pixels(images):
    held, streamed = _image_folder(images, in_memory=True), _image_folder(images, in_memory=False)
    assert isinstance(held.x, np.ndarray) and isinstance(streamed.x, ImageFiles)
    assert streamed.x.shape == held.x.shape and streamed.sample_shape == held.sample_shape == (3, 4, 5)
    assert streamed.y.tolist() == held.y.tolist() and streamed.class_names == held.class_names
    np.testing.assert_array_equal(streamed.x.rows(np.array([7, 0, 13])), held.x[[7, 0, 13]])
    np.testing.assert_array_equal(lazy.materialize(streamed.x), held.x)
    resized = _image_folder(images, in_memory=False, image_size=3, grayscale=True)
    np.testing.assert_array_equal(lazy.materialize(resized.x), _image_folder(images, image_size=3, grayscale=True).x)


def test_auto_streams_above_the_documented_limit(images, monkeypatch):
    assert isinstance(_image_folder(images).x, np.ndarray)  # 20 small images: in memory
    monkeypatch.setattr(lazy, "IN_MEMORY_LIMIT_BYTES", 20 * 3 * 4 * 5 * 4 - 1)  # one byte short of the pixels
    assert isinstance(_image_folder(images).x, ImageFiles)


def test_streaming_checks_sizes_from_headers_up_front(tmp_path):
    root = _images(tmp_path / "imgs", per_class=3)
    Image.fromarray(np.zeros((9, 9, 3), dtype=np.uint8)).save(root / "b" / "big.png")
    with pytest.raises(DataError, match=r"differ in size: .* is 5x4 pixels but '.*big.png' is 9x9"):
        _image_folder(root, in_memory=False)
    assert _image_folder(root, in_memory=False, image_size=4).x.shape == (7, 48)


def test_image_fingerprint_hashes_the_files(images, tmp_path):
    first = load_data(_cfg(images, False), 0).fingerprint
    assert load_data(_cfg(images, False), 1).fingerprint == first  # the data, not the split
    copy = _images(tmp_path / "copy")
    Image.fromarray(np.zeros((4, 5, 3), dtype=np.uint8)).save(copy / "a" / "3.png")
    assert load_data(_cfg(copy, False), 0).fingerprint != first


# --- scaling fitted by a chunked pass ----------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
def test_streamed_image_scaling_equals_the_in_memory_one(images, monkeypatch, num_workers):
    monkeypatch.setattr(lazy, "CHUNK_ROWS", 3)  # several chunks, the last one short
    held, streamed = load_data(_cfg(images, True), 0), load_data(_cfg(images, False, num_workers), 0)
    for name in ("mean", "scale"):
        np.testing.assert_allclose(getattr(streamed.preprocess[0], name), getattr(held.preprocess[0], name),
                                   rtol=1e-9, atol=0)
    assert isinstance(streamed.x_train, LazySplit) and streamed.x_train.shape == held.x_train.shape
    for split in ("x_train", "x_val", "x_test"):
        assert torch.equal(getattr(streamed, split)[:], getattr(held, split)), split
    assert np.array_equal(streamed.raw_example, held.raw_example)


def test_the_scaling_pass_reads_with_data_num_workers(images, monkeypatch):
    from dlrun.data import streaming
    from dlrun.training.ranks import ranks_on_this_node

    counts, real = [], streaming.worker_loader
    monkeypatch.setattr(streaming, "worker_loader",
                        lambda dataset, jobs, num_workers, *args, **kwargs:
                        counts.append(num_workers) or real(dataset, jobs, num_workers, *args, **kwargs))
    for num_workers in (0, 2):
        load_data(_cfg(images, False, num_workers), 0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(9)), raising=False)
    load_data(_cfg(images, False, "auto"), 0, ranks_here=4)  # DDP: 4 ranks share 9 cores, one for each rank
    assert counts == [0, 2, 1]
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "8")  # what Lightning's launcher gives the ranks it starts
    assert ranks_on_this_node(num_nodes=2) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")  # torchrun
    assert ranks_on_this_node(num_nodes=2) == 3


@pytest.mark.parametrize("shared", [False, True])
def test_chunked_scaling_of_features_on_different_scales(tmp_path, monkeypatch, shared):
    monkeypatch.setattr(lazy, "CHUNK_ROWS", 7)
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(101, 4)) * [1e-3, 1.0, 1e3, 1e6] + [5.0, -2.0, 1e4, 3e7]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    features = lazy.MemmapFeatures(str(tmp_path / "x.npy"), np.load(tmp_path / "x.npy", mmap_mode="r"))
    y = np.arange(101) % 2
    splits = split_indices(RawData(x, y, "classification", (4,)), 0.2, 0.2, 0)
    held = _scaling(RawData(x, y, "classification", (4,), shared_scale=shared), splits[0])
    streamed = _scaling(RawData(features, y, "classification", (4,), shared_scale=shared), splits[0])
    for expected, got in zip(held, streamed):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)
    in_memory = _bundle(RawData(x, y, "classification", (4,)), *splits)
    lazily = _bundle(RawData(features, y, "classification", (4,)), *splits)
    assert lazily.fingerprint == in_memory.fingerprint  # a memory-mapped array hashes as the same array in memory


# --- the streaming loader ---------------------------------------------------------------------


def _split(tmp_path, n=23, width=6):
    x = np.arange(n * width, dtype=np.float32).reshape(n, width)
    np.save(tmp_path / "rows.npy", x)
    features = lazy.MemmapFeatures(str(tmp_path / "rows.npy"), np.load(tmp_path / "rows.npy", mmap_mode="r"))
    rows = np.array([i for i in range(n) if i % 5 != 3])  # a split: some rows of the source
    preprocess = torch.nn.Sequential()  # identity: the raw rows are the model inputs
    return LazySplit(features, rows, preprocess, (width,)), torch.from_numpy(x[rows]), torch.from_numpy(rows)


def _batches(loader, epochs=3):
    return [[(x.clone(), y.clone()) for x, y in loader] for _ in range(epochs)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_streaming_loader_makes_the_batch_loaders_batches(tmp_path, num_workers):
    split, x, y = _split(tmp_path)
    noise = AUGMENTS.get("noise").builder((6,), std=0.5)
    for shuffle in (True, False):
        expected = _batches(BatchLoader(x, y, 4, shuffle=shuffle, seed=7, augment=noise if shuffle else None))
        streamed = _batches(StreamingLoader(split, y, 4, shuffle=shuffle, seed=7, augment=noise if shuffle else None,
                                            num_workers=num_workers))
        assert len(streamed) == len(expected)
        for epoch, (ours, theirs) in enumerate(zip(streamed, expected)):
            assert len(ours) == len(theirs), epoch
            for (a, ay), (b, by) in zip(ours, theirs):
                assert torch.equal(a, b) and torch.equal(ay, by), epoch


def test_streaming_loader_resumes_mid_epoch_and_keeps_the_global_generator(tmp_path):
    split, x, y = _split(tmp_path)
    whole = _batches(BatchLoader(x, y, 4, shuffle=True, seed=1), epochs=2)
    streaming = StreamingLoader(split, y, 4, shuffle=True, seed=1, num_workers=2)
    streaming.load_state_dict({"epoch": 1, "batch": 2})  # as a checkpoint taken after 2 batches of epoch 1
    torch.manual_seed(5)
    expected_draw = torch.rand(1)
    torch.manual_seed(5)
    tail = [y_batch for _, y_batch in streaming]
    assert torch.equal(torch.rand(1), expected_draw), "reading with workers must not draw from the global generator"
    assert [t.tolist() for t in tail] == [b.tolist() for _, b in whole[1][2:]]


def _readers(others=frozenset()) -> list[int]:
    """The pids of this process's live children but `others`: the loaders' worker processes."""
    return [child.pid for child in psutil.Process().children()
            if child.pid not in others and child.status() != psutil.STATUS_ZOMBIE]


def test_a_pass_ends_its_workers_with_its_last_batch_or_when_it_is_ended(tmp_path):
    """Lightning takes len() batches and never asks past them, and its sanity check takes only the first
    batches of validation: a pass left open would keep its workers alive beside the next pass's."""
    others = frozenset(_readers())  # children that other tests in this process may have started
    split, x, y = _split(tmp_path)
    loader = StreamingLoader(split, y, 4, shuffle=False, num_workers=2)
    expected = [b.tolist() for _, b in BatchLoader(x, y, 4, shuffle=False)]
    batches = iter(loader)
    taken = [next(batches)[1].tolist() for _ in range(len(loader))]
    assert taken == expected and _readers(others) == [], "the last batch in hand, the workers are gone"

    batches = iter(loader)
    assert next(batches)[1].tolist() == expected[0] and len(_readers(others)) == 2
    loader.end_pass()
    assert _readers(others) == []
    assert next(batches, None) is None, "an ended pass yields nothing more"
    assert [b.tolist() for _, b in loader] == expected, "the next pass is whole"


def test_an_unreadable_file_in_a_worker_is_a_data_error_naming_it(tmp_path):
    root = _images(tmp_path / "imgs", per_class=4)
    broken = root / "b" / "2.png"
    broken.write_bytes(broken.read_bytes()[:60])  # the header survives: only decoding fails
    raw = _image_folder(root, in_memory=False)
    split = LazySplit(raw.x, np.arange(8), torch.nn.Sequential(), raw.sample_shape)
    with pytest.raises(DataError) as error:
        list(StreamingLoader(split, torch.from_numpy(raw.y), 3, shuffle=False, num_workers=2))
    message = str(error.value)
    assert "cannot read image" in message and str(broken) in message and "Replace or remove" in message
    assert "Traceback" not in message and "worker" not in message
    with pytest.raises(DataError, match="2.png"):  # found by the scaling pass: before any run exists
        load_data(_cfg(root, False, 2), 0)


class _DiesInAWorker(lazy.MemmapFeatures):
    """Rows that kill the process reading them when it is a DataLoader worker (as the OOM killer would)."""

    def rows(self, indices):
        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().rows(indices)


def test_a_worker_that_dies_is_a_data_error_naming_the_source(tmp_path):
    split, _, y = _split(tmp_path)
    split.features.__class__ = _DiesInAWorker
    with pytest.raises(DataError) as error:
        list(StreamingLoader(split, y, 4, shuffle=False, num_workers=2))
    message = str(error.value)
    assert f"a process reading {tmp_path / 'rows.npy'} died (signal: Killed" in message, message
    assert "data.num_workers" in message and "DataLoader" not in message


def test_num_workers_auto_leaves_a_core_for_training(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    assert resolve_num_workers("auto") == resolve_num_workers(None) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert resolve_num_workers("auto") == 8
    assert resolve_num_workers("auto", ranks_here=16) == 3  # DDP: each rank its share of the cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert resolve_num_workers("auto") == 0 and resolve_num_workers(3) == 3


def test_ctrl_c_to_the_process_group_leaves_the_workers_reading(tmp_path):
    """A terminal's Ctrl-C reaches the workers too; training stops at a batch boundary only if they keep
    serving batches until then."""
    split, _, y = _split(tmp_path, n=60)
    loader = StreamingLoader(split, y, 2, shuffle=False, num_workers=2)
    before = {child.pid for child in psutil.Process().children()}
    batches = iter(loader)
    next(batches)
    workers = [child.pid for child in psutil.Process().children() if child.pid not in before]
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGINT)
    assert len(list(batches)) == len(loader) - 1


PERSISTENT = """
import sys, warnings
import numpy as np, torch
from dlrun.data import lazy
from dlrun.data.loader import BatchLoader
from dlrun.data.streaming import LazySplit, StreamingLoader
warnings.simplefilter("ignore")  # pin_memory without a GPU
x = np.arange(150, dtype=np.float32).reshape(50, 3)
np.save(sys.argv[1], x)
split = LazySplit(lazy.MemmapFeatures(sys.argv[1], np.load(sys.argv[1], mmap_mode="r")), np.arange(50),
                  torch.nn.Sequential(), (3,))
streaming = StreamingLoader(split, torch.arange(50), 4, shuffle=True, seed=3, num_workers=2, pin_memory=True)
assert streaming._loader.persistent_workers
reference = BatchLoader(torch.from_numpy(x), torch.arange(50), 4, shuffle=True, seed=3)
abandoned, skipped = iter(streaming), iter(reference)  # a sanity check's two batches, then whole epochs
for _ in range(2):
    next(abandoned), next(skipped)
del abandoned, skipped
for _ in range(2):
    pairs = list(zip(streaming, reference))
    assert len(pairs) == len(reference)
    assert all(torch.equal(a, b) and torch.equal(ay, by) for (a, ay), (b, by) in pairs)
print("done")
"""


def test_persistent_workers_serve_every_pass_and_let_the_process_exit(tmp_path):
    """On a GPU the workers live from one pass to the next (pin_memory=True): an abandoned pass must not
    shift the next, and the process must still exit (its workers ended with it)."""
    done = subprocess.run([sys.executable, "-c", PERSISTENT, str(tmp_path / "x.npy")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-2000:]


def test_num_workers_is_checked_and_optional():
    composed = compose(["data=iris"])
    assert composed.config["data"]["num_workers"] == "auto"
    del composed.config["data"]["num_workers"]  # a run recorded before the key existed
    assert "num_workers" not in validate(composed).data
    assert validate(compose(["data=iris", "data.num_workers=3"])).data["num_workers"] == 3
    for bad in ("-1", "many", "1.5"):
        with pytest.raises(ConfigError, match=r"'data.num_workers' must be auto or a count of 0 or more"):
            validate(compose(["data=iris", f"data.num_workers={bad}"]))


def test_eval_on_other_streamed_data_predicts_every_row_a_chunk_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(lazy, "CHUNK_ROWS", 4)
    split, _, _ = _split(tmp_path, n=10)
    seen = []

    class Model:  # what the served model offers: predict on raw rows
        def predict(self, rows):
            seen.append(len(rows))
            return rows.sum(axis=1, keepdims=True)

    outputs = _predicted(Model(), split.features)
    np.testing.assert_array_equal(outputs, lazy.materialize(split.features).sum(axis=1, keepdims=True))
    assert seen == [4, 4, 2]


def test_ctrl_c_is_held_back_only_where_a_pass_forks_its_workers():
    from torch.utils.data import DataLoader

    from dlrun.data.streaming import _forks

    rows = list(range(8))
    assert not _forks(DataLoader(rows, num_workers=0))
    assert _forks(DataLoader(rows, num_workers=2))  # every pass forks its own
    persistent = DataLoader(rows, num_workers=2, persistent_workers=True)
    assert _forks(persistent)  # the first pass forks them
    persistent._iterator = object()  # as torch keeps the workers of the first pass
    assert not _forks(persistent)  # later passes wait for them: Ctrl-C must still get through
