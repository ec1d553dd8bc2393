"""Index.save / Index.load: plain files, exact round trips, damaged, crafted or unsafe files refused."""
import json
import os

import numpy as np
import pytest

from axn_fast import Index, IndexFileError
from axn_fast.io import persistence


def _index(dtype="float32", n=500, d=24, seed=0, **kw):
    V = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return Index(V, dtype=dtype, **kw)


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _set_manifest(path, doc):
    (path / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip_is_exact(tmp_path, dtype, mmap):
    idx = _index(dtype)
    idx.metadata = {"model": "minilm", "config_hash": "abc", "k_d": 100}
    idx.save(tmp_path / "ix")
    back = Index.load(tmp_path / "ix", mmap=mmap)
    assert back.n_items == idx.n_items and back.dim == idx.dim and back.dtype == dtype
    assert np.array_equal(back.vectors, idx.vectors)
    assert back.metadata == idx.metadata
    if mmap:  # the vectors are a view of the file, not a copy in memory
        assert isinstance(back.vectors.base, np.memmap)
    else:
        assert not isinstance(back.vectors.base, np.memmap)
    U = np.random.default_rng(1).normal(size=(7, 24)).astype(np.float32)
    for a, b in zip(idx.search(U, 10), back.search(U, 10)):
        assert np.array_equal(a, b)
    assert back.max_row_norm == idx.max_row_norm  # recomputed from the vectors, never read from a file
    for a, b in zip(idx.search(U[0], 10), Index.load(tmp_path / "ix", verify="full").search(U[0], 10)):
        assert np.array_equal(a, b)


def test_files_are_plain_and_listed_in_the_manifest(tmp_path):
    for dtype in ("float32", "float16"):
        _index(dtype).save(tmp_path / dtype)
        names = sorted(p.name for p in (tmp_path / dtype).iterdir())
        assert names == ["manifest.json", "vectors.npy"]  # nothing derived is stored (no float16 copy)
        m = _manifest(tmp_path / dtype)
        assert m["format"] == "axn_fast.index" and m["format_version"] == 2 and m["dtype"] == dtype
        assert m["files"]["vectors.npy"]["bytes"] == (tmp_path / dtype / "vectors.npy").stat().st_size
        assert "max_row_norm" not in m
        assert np.load(tmp_path / dtype / "vectors.npy", allow_pickle=False).dtype == np.float32
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_truncated_file_is_refused(tmp_path):
    _index().save(tmp_path / "ix")
    f = tmp_path / "ix" / "vectors.npy"
    f.write_bytes(f.read_bytes()[:-100])
    for mmap in (True, False):
        with pytest.raises(IndexFileError, match="truncated or replaced"):
            Index.load(tmp_path / "ix", mmap=mmap)


def test_tampered_file_is_refused(tmp_path):
    _index().save(tmp_path / "ix")
    f = tmp_path / "ix" / "vectors.npy"
    data = bytearray(f.read_bytes())
    data[-7] ^= 0x01  # same size, one bit of one float changed
    f.write_bytes(bytes(data))
    for mmap in (True, False):
        with pytest.raises(IndexFileError, match="SHA-256"):
            Index.load(tmp_path / "ix", mmap=mmap, verify="full")
        with pytest.raises(IndexFileError, match="SHA-256"):
            Index.load(tmp_path / "ix", mmap=mmap, verify=True)
    Index.load(tmp_path / "ix")  # documented: the cheap default checks sizes, headers and finiteness only
    with pytest.raises(ValueError, match="verify must be 'cheap' or 'full'"):
        Index.load(tmp_path / "ix", verify="sha")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_vectors_are_refused_by_default(tmp_path, bad):
    _index().save(tmp_path / "ix")
    f = tmp_path / "ix" / "vectors.npy"
    V = np.load(f)
    V[123, 5] = bad
    np.save(f, V)  # same size; the manifest's SHA-256 is now stale but the default does not hash
    for mmap in (True, False):
        with pytest.raises(IndexFileError, match="non-finite value .* row 123"):
            Index.load(tmp_path / "ix", mmap=mmap)


def _write_v1(path, V, *, f16=None, max_row_norm=None, dtype="float16"):
    """A directory in the format of axn_fast 0.1 (format_version 1)."""
    path.mkdir()
    np.save(path / "vectors.npy", V)
    files = {"vectors.npy": {"bytes": (path / "vectors.npy").stat().st_size, "sha256": "0" * 64}}
    if f16 is not None:
        np.save(path / "vectors_f16.npy", f16)
        files["vectors_f16.npy"] = {"bytes": (path / "vectors_f16.npy").stat().st_size, "sha256": "0" * 64}
    doc = {"format": "axn_fast.index", "format_version": 1, "n_items": V.shape[0], "dim": V.shape[1],
           "dtype": dtype, "normalization": None, "max_row_norm": max_row_norm, "metadata": {"a": 1},
           "versions": {}, "files": files}
    _set_manifest(path, doc)


def test_derived_values_of_old_indexes_are_never_trusted(tmp_path):
    rng = np.random.default_rng(0)
    V = rng.normal(size=(400, 16)).astype(np.float32)
    wrong16 = rng.normal(size=V.shape).astype(np.float16)  # a float16 copy that disagrees with V
    _write_v1(tmp_path / "old", V, f16=wrong16, max_row_norm=0.0)
    back = Index.load(tmp_path / "old")
    assert back.dtype == "float16" and back.metadata == {"a": 1}
    U = rng.normal(size=(50, 16)).astype(np.float32)
    want = Index(V, dtype="float16").search(U, 5)
    for a, b in zip(want, back.search(U, 5)):  # 0.1 returned wrong ids here (16/16 queries)
        assert np.array_equal(a, b)
    assert back.max_row_norm == pytest.approx(float(np.sqrt((V.astype(np.float64) ** 2).sum(1).max())))


def test_symlinks_and_names_outside_the_directory_are_refused(tmp_path):
    _index().save(tmp_path / "ix")
    outside = tmp_path / "elsewhere.npy"
    os.replace(tmp_path / "ix" / "vectors.npy", outside)
    os.symlink(outside, tmp_path / "ix" / "vectors.npy")
    with pytest.raises(IndexFileError, match="symlink"):
        Index.load(tmp_path / "ix")
    os.remove(tmp_path / "ix" / "vectors.npy")
    os.replace(outside, tmp_path / "ix" / "vectors.npy")
    Index.load(tmp_path / "ix")
    os.replace(tmp_path / "ix" / "manifest.json", tmp_path / "m.json")
    os.symlink(tmp_path / "m.json", tmp_path / "ix" / "manifest.json")
    with pytest.raises(IndexFileError, match="symlink"):
        Index.load(tmp_path / "ix")


def test_headers_claiming_more_than_the_file_holds_are_refused_before_allocating(tmp_path):
    _index().save(tmp_path / "ix")
    f = tmp_path / "ix" / "vectors.npy"
    n, d = 200_000, 20_000  # 16 GB of float32 declared by a file of a few hundred bytes
    header = {"descr": "<f4", "fortran_order": False, "shape": (n, d)}
    with open(f, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 64)
    doc = _manifest(tmp_path / "ix")
    doc.update(n_items=n, dim=d)
    doc["files"]["vectors.npy"]["bytes"] = f.stat().st_size
    _set_manifest(tmp_path / "ix", doc)
    with pytest.raises(IndexFileError, match=r"declares \(200000, 20000\) float32 .* holds 64 data bytes"):
        Index.load(tmp_path / "ix", mmap=False)


def test_fortran_order_is_named(tmp_path):
    idx = _index()
    idx.save(tmp_path / "ix")
    f = tmp_path / "ix" / "vectors.npy"
    np.save(f, np.asfortranarray(idx.vectors))
    doc = _manifest(tmp_path / "ix")
    doc["files"]["vectors.npy"]["bytes"] = f.stat().st_size
    _set_manifest(tmp_path / "ix", doc)
    with pytest.raises(IndexFileError, match="Fortran"):
        Index.load(tmp_path / "ix")


def test_damaged_manifest_and_bad_paths(tmp_path):
    _index().save(tmp_path / "ix")
    m = tmp_path / "ix" / "manifest.json"
    text = m.read_text()
    m.write_text(text[:50])
    with pytest.raises(IndexFileError, match="not valid JSON"):
        Index.load(tmp_path / "ix")
    m.write_text("[" * 100_000 + "]" * 100_000)  # RecursionError in 0.1
    with pytest.raises(IndexFileError, match="nested more than"):
        Index.load(tmp_path / "ix")
    doc = json.loads(text)
    doc["dim"] = 25
    m.write_text(json.dumps(doc))
    with pytest.raises(IndexFileError, match=r"holds float32 \(500, 24\), expected float32 \(500, 25\)"):
        Index.load(tmp_path / "ix")
    doc["dim"], doc["format_version"] = 24, 99
    m.write_text(json.dumps(doc))
    with pytest.raises(IndexFileError, match="format version 99"):
        Index.load(tmp_path / "ix")
    m.unlink()
    with pytest.raises(IndexFileError, match="no manifest.json"):
        Index.load(tmp_path / "ix")
    with pytest.raises(FileNotFoundError, match="no saved index"):
        Index.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="not empty"):
        _index().save(tmp_path / "ix")
    _index(seed=3).save(tmp_path / "ix", overwrite=True)
    assert Index.load(tmp_path / "ix").n_items == 500


def test_bad_arguments_are_not_blamed_on_the_files(tmp_path):
    _index().save(tmp_path / "ix")
    with pytest.raises(ValueError, match="num_threads") as info:
        Index.load(tmp_path / "ix", num_threads=-1)
    assert not isinstance(info.value, IndexFileError)


def test_pickled_array_is_never_loaded(tmp_path):
    _index().save(tmp_path / "ix")
    f = tmp_path / "ix" / "vectors.npy"
    np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    doc = _manifest(tmp_path / "ix")
    doc["files"]["vectors.npy"]["bytes"] = f.stat().st_size
    _set_manifest(tmp_path / "ix", doc)
    with pytest.raises(IndexFileError, match="not a readable .npy"):
        Index.load(tmp_path / "ix")


def test_a_failed_save_leaves_nothing_half_written(tmp_path, monkeypatch):
    idx = _index()
    idx.metadata = {"bad": object()}
    with pytest.raises(TypeError, match="JSON-serialisable"):
        idx.save(tmp_path / "ix")
    assert not (tmp_path / "ix").exists()
    idx.metadata = {}
    idx.save(tmp_path / "ix")
    before = (tmp_path / "ix" / "vectors.npy").read_bytes()

    def disk_full(path, arr):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persistence, "save_npy", disk_full)
    with pytest.raises(OSError, match="No space"):
        _index(seed=5).save(tmp_path / "ix", overwrite=True)
    assert (tmp_path / "ix" / "vectors.npy").read_bytes() == before  # the old index is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # and no temporary directory is left
