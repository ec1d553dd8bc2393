"""Index.save / Index.load: plain files, exact round trips, damaged files refused."""
import json

import numpy as np
import pytest

from axn_fast import Index, IndexFileError, ScoreNormalization


def _index(dtype="float32", n=500, d=24, seed=0, **kw):
    V = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return Index(V, dtype=dtype, **kw)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip_is_exact(tmp_path, dtype, mmap):
    idx = _index(dtype, normalization=ScoreNormalization(2.5, 0.25))
    idx.metadata = {"model": "minilm", "config_hash": "abc", "k_d": 100}
    idx.save(tmp_path / "ix")
    back = Index.load(tmp_path / "ix", mmap=mmap)
    assert back.n_items == idx.n_items and back.dim == idx.dim and back.dtype == dtype
    assert np.array_equal(back.vectors, idx.vectors)
    assert back.normalization == (2.5, 0.25) and back.metadata == idx.metadata
    if mmap:  # the vectors are a view of the file, not a copy in memory
        assert isinstance(back.vectors.base, np.memmap)
    else:
        assert not isinstance(back.vectors.base, np.memmap)
    U = np.random.default_rng(1).normal(size=(7, 24)).astype(np.float32)
    for a, b in zip(idx.search(U, 10), back.search(U, 10)):
        assert np.array_equal(a, b)
    assert back._max_row_norm is not None  # taken from the manifest, not computed from the file
    assert back.max_row_norm == idx.max_row_norm
    if dtype == "float16":
        assert np.array_equal(back._V16, idx._V16)
    assert back.query_encoder is None


def test_files_are_plain_and_listed_in_the_manifest(tmp_path):
    _index().save(tmp_path / "ix")
    names = sorted(p.name for p in (tmp_path / "ix").iterdir())
    assert names == ["manifest.json", "vectors.npy"]
    m = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert m["format"] == "axn_fast.index" and m["files"]["vectors.npy"]["bytes"] == (
        tmp_path / "ix" / "vectors.npy").stat().st_size
    assert np.load(tmp_path / "ix" / "vectors.npy", allow_pickle=False).dtype == np.float32


def test_query_encoder_is_saved_and_loaded(tmp_path):
    pytest.importorskip("torch", reason="MF_IND needs torch")
    from axn_fast import InductiveMF

    idx = _index()
    idx.query_encoder = InductiveMF(24, seed=1)
    idx.save(tmp_path / "ix")
    back = Index.load(tmp_path / "ix")
    x = np.random.default_rng(0).normal(size=(3, 24)).astype(np.float32)
    assert np.array_equal(back.query_encoder.embed_queries(x), idx.query_encoder.embed_queries(x))
    assert Index.load(tmp_path / "ix", load_query_encoder=False).query_encoder is None
    enc = tmp_path / "ix" / "query_encoder.safetensors"
    data = bytearray(enc.read_bytes())
    data[-5] ^= 0xFF
    enc.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="SHA-256"):
        Index.load(tmp_path / "ix")  # the encoder is always verified, even with mmap


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
    with pytest.raises(IndexFileError, match="SHA-256"):
        Index.load(tmp_path / "ix", mmap=False)
    with pytest.raises(IndexFileError, match="SHA-256"):
        Index.load(tmp_path / "ix", mmap=True, verify=True)
    Index.load(tmp_path / "ix", mmap=True)  # documented: memory-mapping checks sizes and headers only


def test_damaged_manifest_and_bad_paths(tmp_path):
    _index().save(tmp_path / "ix")
    m = tmp_path / "ix" / "manifest.json"
    text = m.read_text()
    m.write_text(text[:50])
    with pytest.raises(IndexFileError, match="not valid JSON"):
        Index.load(tmp_path / "ix")
    doc = json.loads(text)
    doc["dim"] = 25
    m.write_text(json.dumps(doc))
    with pytest.raises(IndexFileError, match="the manifest says float32 \\(500, 25\\)"):
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


def test_pickled_array_is_never_loaded(tmp_path):
    _index().save(tmp_path / "ix")
    f = tmp_path / "ix" / "vectors.npy"
    np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    doc = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    doc["files"]["vectors.npy"]["bytes"] = f.stat().st_size
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(IndexFileError, match="not a readable .npy"):
        Index.load(tmp_path / "ix")


def test_metadata_must_be_json(tmp_path):
    idx = _index()
    idx.metadata = {"bad": object()}
    with pytest.raises(TypeError, match="JSON-serialisable"):
        idx.save(tmp_path / "ix")
