"""axn_fast.io: the one checkpoint format, atomic files, confined paths, bounded JSON, the directory lock."""
import json
import os

import numpy as np
import pytest

from axn_fast.io.checkpoint import Checkpoint, CheckpointCorrupt, CheckpointMismatch
from axn_fast.io.files import (DirectoryBusyError, DirectoryLock, UnsafePathError, atomic_write, confined,
                               read_json)


def _open(path, **kw):
    args = dict(kind="test", config={"job": 1}, n_units=100, width=3, dtype="float64", shard_units=16)
    args.update(kw)
    return Checkpoint(path, **args).open()


def test_records_in_any_order_survive_a_reopen_and_finished_shards_are_compacted(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(100, 3))
    order = rng.permutation(100)
    with _open(tmp_path) as ck:
        for chunk in np.array_split(order[:70], 9):  # uneven batches, out of order
            ck.record(chunk, truth[chunk])
    with _open(tmp_path) as ck:
        assert ck.n_done == 70 and set(ck.pending()) == set(order[70:])
        np.testing.assert_array_equal(ck.values[ck.done], truth[ck.done])
        ck.record(order[70:], truth[order[70:]])
        assert ck.files() == [f"shard-{s:05d}.bin" for s in range(7)]  # every journal compacted away
    with _open(tmp_path) as ck:
        assert ck.done.all()
        np.testing.assert_array_equal(ck.values, truth)


def test_a_torn_or_damaged_record_is_dropped_with_what_follows(tmp_path):
    with _open(tmp_path) as ck:
        ck.record([0, 1], np.ones((2, 3)))
        ck.record([2], np.ones((1, 3)))
    j = tmp_path / "shard-00000.journal"
    data = j.read_bytes()
    j.write_bytes(data[:-5])
    with _open(tmp_path) as ck:
        assert ck.n_done == 2
    assert j.stat().st_size < len(data) - 5  # truncated back to the last good record


def test_a_corrupt_shard_names_itself(tmp_path):
    with _open(tmp_path) as ck:
        ck.record(np.arange(16), np.zeros((16, 3)))
    f = tmp_path / "shard-00000.bin"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorrupt, match="shard-00000.bin.*delete it"):
        _open(tmp_path)


def test_configuration_layout_and_identity_are_enforced(tmp_path):
    _open(tmp_path).close()
    with pytest.raises(CheckpointMismatch, match="differs in: job"):
        _open(tmp_path, config={"job": 2})
    with pytest.raises(CheckpointMismatch, match="differs in: width"):
        _open(tmp_path, width=4)
    ck = _open(tmp_path)
    assert ck.check_identity(None, lambda: np.array([1.0, 2.0])) is not None
    ck.close()
    ck = _open(tmp_path)
    ck.check_identity(None, lambda: np.array([1.0, 2.0 + 1e-7]))  # within tolerance
    with pytest.raises(CheckpointMismatch, match="another cross-encoder"):
        ck.check_identity(None, lambda: np.array([1.0, 2.5]))
    ck.close()
    (tmp_path / "manifest.json").write_text("{}")  # a 0.1 checkpoint next to it
    os.remove(tmp_path / "checkpoint.json")
    with pytest.raises(CheckpointMismatch, match="older axn_fast"):
        _open(tmp_path)


def test_lock_is_exclusive_and_released_with_the_holder(tmp_path):
    lock = DirectoryLock(tmp_path).acquire()
    with pytest.raises(DirectoryBusyError, match=f"process {os.getpid()}"):
        DirectoryLock(tmp_path).acquire()
    lock.release()
    with DirectoryLock(tmp_path):
        pass


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    f = tmp_path / "x.json"
    atomic_write(f, lambda fh: fh.write(b"old"))

    def fail(fh):
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(f, fail)
    assert f.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_confined_refuses_escapes(tmp_path):
    (tmp_path / "d").mkdir()
    for bad in ("../x", "/etc/passwd", "a/../../x", "", "a//b", "."):
        with pytest.raises(UnsafePathError):
            confined(tmp_path / "d", bad)
    os.symlink(tmp_path, tmp_path / "d" / "up")
    with pytest.raises(UnsafePathError, match="symlink"):
        confined(tmp_path / "d", "up/x")
    assert confined(tmp_path / "d", "sub/file.npy") == (tmp_path / "d").resolve() / "sub" / "file.npy"


def test_read_json_bounds(tmp_path):
    f = tmp_path / "m.json"
    f.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(ValueError, match="nested more than 64"):
        read_json(f)
    f.write_text(json.dumps({"s": "[[[[" * 100}))  # brackets inside strings do not count
    assert read_json(f) == {"s": "[[[[" * 100}
    f.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_json(f)
    f.write_text("x" * 200)
    with pytest.raises(ValueError, match="more than the 100 allowed"):
        read_json(f, max_bytes=100)
