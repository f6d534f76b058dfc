"""`data=csv` larger than memory: converted chunk by chunk into a memory-mapped cache, with the in-memory
path's arrays, labels and messages, reused while the file is unchanged, never half-written."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from dlrun.data import csv_cache, lazy
from dlrun.data.csv_file import estimated_float32_bytes
from dlrun.data.lazy import MemmapFeatures, materialize
from dlrun.data.sources import DATASETS
from dlrun.errors import DataError


def _raw(**options):
    return DATASETS.get("csv").builder(**DATASETS.bind("csv", options, "data"))


def rows(*lines: str) -> str:
    return "".join(f"{line}\n" for line in lines)


def good_csv(replace: tuple[str, str] = ("", "")) -> str:
    """40 rows of two numeric features and a balanced binary target y; one line changed by `replace`."""
    return rows("x1,x2,y", *(f"{i},{i * 2 % 7},{i % 2}" for i in range(40))).replace(*replace)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch, tmp_path):
    """Chunks of 5 rows (3 columns), so that every file here is converted in several; the cache beside it."""
    monkeypatch.setattr(csv_cache, "CHUNK_BYTES", 5 * 8 * 3)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


def _both(name: str, text: str, **options):
    """The RawData (or the DataError's message) of the in-memory path and of the cached one."""
    path = os.path.join(os.getcwd(), name)
    with open(path, "w") as out:
        out.write(text)
    results = []
    for in_memory in (True, False):
        try:
            results.append(_raw(path=name, target="y", in_memory=in_memory, **options))
        except DataError as error:
            results.append(str(error))
    return results


@pytest.mark.parametrize("text,options", [
    pytest.param(rows("a,b,y", *(f"{i * 0.37:.3f},{i % 7},{'cat dog emu'.split()[i % 3]}" for i in range(33))), {},
                 id="string labels"),
    pytest.param(rows("a,y", *(f"{i},{i % 3}" for i in range(25)), *(f"{i},cat" for i in range(10))), {},
                 id="numbers in early chunks, text later"),
    pytest.param(rows("a,b,y", *(f"{i},{-i},{i * 1.5}" for i in range(27))), {}, id="regression"),
    pytest.param(rows("a;y", *(f"{i};{i % 2 == 0}" for i in range(21))), {"delimiter": ";"}, id="booleans, ';'"),
])
def test_the_cache_holds_what_the_in_memory_path_reads(text, options):
    in_memory, cached = _both("d.csv", text, **options)
    assert isinstance(in_memory.x, np.ndarray) and isinstance(cached.x, MemmapFeatures)
    np.testing.assert_array_equal(materialize(cached.x), in_memory.x)
    np.testing.assert_array_equal(cached.y, in_memory.y)
    assert cached.y.dtype == in_memory.y.dtype and cached.task == in_memory.task
    assert cached.class_names == in_memory.class_names and cached.feature_names == in_memory.feature_names
    assert cached.sample_shape == in_memory.sample_shape
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(cached.x)).rows(np.array([3, 0])), in_memory.x[[3, 0]])


@pytest.mark.parametrize("text,options", [
    pytest.param("", {}, id="empty"),
    pytest.param("x1,x2,y\n", {}, id="header only"),
    pytest.param(good_csv().replace(",", ";"), {}, id="wrong delimiter"),
    pytest.param(good_csv(("\n3,6,1\n", "\nnan,6,1\n")), {}, id="NaN feature"),
    pytest.param(good_csv(("\n3,6,1\n", "\n3,inf,1\n")).replace("\n33,", "\n1e40,"), {}, id="two bad columns, two chunks"),
    pytest.param(good_csv(("\n33,3,1\n", "\n33,3,1,9\n")), {}, id="ragged row in a later chunk"),
    pytest.param(good_csv(("\n30,4,0\n", "\nabc,4,0\n")), {}, id="text in a later chunk's feature"),
    pytest.param(good_csv(("\n3,6,1\n", "\n3,6,\n")), {}, id="empty target"),
    pytest.param(good_csv(("\n3,6,1\n", "\n3,6,inf\n")), {"task": "regression"}, id="infinite regression target"),
    pytest.param(good_csv(("\n3,6,1\n", "\n3,6,cat\n")), {"task": "regression"}, id="text regression target"),
    pytest.param(rows("x1,x2,y", *(f"{i},{i},1" for i in range(40))), {}, id="single class"),
    pytest.param(rows("y", *(str(i % 2) for i in range(40))), {}, id="target only"),
])
def test_a_bad_file_gets_the_same_message_either_way_and_leaves_no_cache(text, options):
    in_memory, cached = _both("d.csv", text, **options)
    assert isinstance(in_memory, str) and cached == in_memory
    assert not os.path.exists("d.csv.dlrun-cache") and not os.path.exists("xdg")


def test_a_missing_target_column_is_named_before_any_cache_exists():
    with open("d.csv", "w") as out:
        out.write(good_csv())
    with pytest.raises(DataError, match="column 'label' .data.target. is not in d.csv. Its columns: x1, x2, y"):
        _raw(path="d.csv", target="label", in_memory=False)
    assert not os.path.exists("d.csv.dlrun-cache")


def _entries() -> list[str]:
    return sorted(os.listdir("d.csv.dlrun-cache"))


def test_the_cache_is_reused_until_the_file_changes(monkeypatch):
    _both("d.csv", good_csv())
    [entry] = _entries()
    written = os.stat(f"d.csv.dlrun-cache/{entry}/x.npy").st_mtime_ns

    def no_conversion(*args):
        raise AssertionError("converted again")

    with monkeypatch.context() as patch:
        patch.setattr(csv_cache, "_write_features", no_conversion)
        assert _raw(path="d.csv", target="y", in_memory=False).class_names == ["0", "1"]
    assert os.stat(f"d.csv.dlrun-cache/{entry}/x.npy").st_mtime_ns == written
    by_x1 = _raw(path="d.csv", target="x1", in_memory=False, task="regression")  # other options: another entry
    assert len(_entries()) == 2 and by_x1.task == "regression"

    with open("d.csv", "a") as out:  # a new version of the file: converted again, the old entries removed
        out.write("40,5,0\n41,6,1\n")
    os.utime("d.csv", ns=(1, 1))
    again = _raw(path="d.csv", target="y", in_memory=False)
    assert len(again.x) == 42 and len(_entries()) == 1 and _entries() != [entry]


def test_a_conversion_that_died_leaves_nothing_that_is_used(monkeypatch):
    with open("d.csv", "w") as out:
        out.write(good_csv())

    def killed(*args):
        raise KeyboardInterrupt  # stands for a signal in the middle of the conversion

    with monkeypatch.context() as patch:
        patch.setattr(csv_cache, "encode_target", killed)
        with pytest.raises(KeyboardInterrupt):
            _raw(path="d.csv", target="y", in_memory=False)
    assert not os.path.exists("d.csv.dlrun-cache")
    # What a SIGKILL leaves: a temporary folder of a process that is gone, complete files and all.
    key = csv_cache.entry_key(os.stat("d.csv"), "y", "auto", ",")
    dead = f"d.csv.dlrun-cache/{csv_cache.temporary_prefix(key, 999999999)}abc"
    # On a shared filesystem: another host's conversion in progress (its process is not this host's to
    # see), and one of a day ago, gone.
    elsewhere = f"d.csv.dlrun-cache/.tmp-{key}-h00000000-{os.getpid()}-abc"
    old = f"d.csv.dlrun-cache/.tmp-{key}-h00000000-1-abc"
    for folder in (dead, elsewhere, old):
        os.makedirs(folder)
        for name in ("x.npy", "y.npy", "meta.json"):
            with open(f"{folder}/{name}", "w") as out:
                out.write("partial")
    os.utime(old, (1, 1))
    raw = _raw(path="d.csv", target="y", in_memory=False)
    # converted; this host's dead one and the day-old one removed, the other host's kept
    assert len(raw.x) == 40 and _entries() == [os.path.basename(elsewhere), key]


def test_a_file_changed_with_its_old_mtime_kept_is_converted_again():
    _both("d.csv", good_csv())
    [entry] = _entries()
    before = os.stat("d.csv")
    with open("d.csv") as source:
        lines = source.readlines()
    lines[1], lines[3] = lines[3], lines[1]  # equal length, same size: "0,0,0" and "2,4,0"
    with open("d.csv", "w") as out:
        out.writelines(lines)
    os.utime("d.csv", ns=(before.st_atime_ns, before.st_mtime_ns))  # as cp -p, rsync -a or tar x keep it
    assert os.stat("d.csv").st_size == before.st_size
    raw = _raw(path="d.csv", target="y", in_memory=False)
    assert materialize(raw.x)[0].tolist() == [2.0, 4.0] and _entries() != [entry] and len(_entries()) == 1


def test_a_broken_entry_is_converted_again():
    _both("d.csv", good_csv())
    [entry] = _entries()
    with open(f"d.csv.dlrun-cache/{entry}/x.npy", "r+b") as out:
        out.truncate(200)  # fewer rows than its header and meta.json say
    raw = _raw(path="d.csv", target="y", in_memory=False)
    assert materialize(raw.x).shape == (40, 2) and _entries() == [entry]


def test_without_a_writable_folder_beside_the_file_the_cache_goes_to_xdg_cache_home():
    with open("d.csv", "w") as out:
        out.write(good_csv())
    with open("d.csv.dlrun-cache", "w") as out:  # in the way: no folder can be made there
        out.write("")
    raw = _raw(path="d.csv", target="y", in_memory=False)
    [folder] = os.listdir("xdg/dlrun")
    assert folder.startswith("d.csv-") and folder.endswith(".dlrun-cache")
    assert raw.x._source[0].startswith(os.path.join(os.getcwd(), "xdg", "dlrun", folder))
    assert raw.x.describe() == "d.csv"  # messages and the dataset's source name the CSV, not the cache


def test_auto_streams_when_the_estimated_float32_size_passes_the_limit(monkeypatch):
    with open("d.csv", "w") as out:
        out.write(good_csv())
    assert estimated_float32_bytes(Path("d.csv"), ",") == pytest.approx(40 * 2 * 4, rel=0.1)
    assert isinstance(_raw(path="d.csv", target="y").x, np.ndarray)
    monkeypatch.setattr(lazy, "IN_MEMORY_LIMIT_BYTES", 200)
    assert isinstance(_raw(path="d.csv", target="y").x, MemmapFeatures)


def test_a_cache_that_cannot_be_written_is_a_data_error_naming_its_folder(monkeypatch):
    with open("d.csv", "w") as out:
        out.write(good_csv())

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv_cache.np, "save", full)
    with pytest.raises(DataError, match="cannot write the cache that streams 'd.csv' in .*d.csv.dlrun-cache: No space"):
        _raw(path="d.csv", target="y", in_memory=False)
    assert not os.path.exists("d.csv.dlrun-cache")


def test_the_cached_features_prepare_the_bundle_the_in_memory_path_prepares():
    import torch

    from dlrun.data.prepare import load_data

    with open("d.csv", "w") as out:
        out.write(rows("a,b,y", *(f"{i * 0.37:.3f},{i % 7},{'cat dog emu'.split()[i % 3]}" for i in range(60))))
    config = {"name": "csv", "batch_size": 16, "val_fraction": 0.2, "test_fraction": 0.2, "path": "d.csv",
              "target": "y"}
    cached, loaded = load_data({**config, "in_memory": False}, 0), load_data({**config, "in_memory": True}, 0)
    assert cached.fingerprint == loaded.fingerprint and cached.class_names == loaded.class_names == ["cat", "dog", "emu"]
    for split in ("train", "val", "test"):
        streamed, held = getattr(cached, f"x_{split}"), getattr(loaded, f"x_{split}")
        assert not isinstance(streamed, torch.Tensor)
        torch.testing.assert_close(streamed[np.arange(len(streamed))], held, rtol=1e-6, atol=1e-6)
        assert torch.equal(getattr(cached, f"y_{split}"), getattr(loaded, f"y_{split}"))
