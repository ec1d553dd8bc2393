"""IndexBundle: an Index plus query encoder, normalisation, items and CE configuration, saved safely."""
import hashlib
import json
import os

import numpy as np
import pytest

from axn_fast import Index, IndexFileError, ScoreNormalization
from axn_fast.indexing.bundle import IndexBundle

ITEMS = [f"item number {i}" for i in range(40)]


def _bundle(encoder=False, **kw):
    V = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    enc = None
    if encoder:
        pytest.importorskip("torch", reason="MF_IND needs torch")
        from axn_fast import InductiveMF

        enc = InductiveMF(8, seed=3)
    args = dict(de_model="minilm", query_encoder=enc, normalization=ScoreNormalization(1.5, 0.5), items=ITEMS,
                ce={"model": "minilm", "head": "emb-cos", "max_length": 64}, metadata={"run": 7})
    args.update(kw)
    return IndexBundle(Index(V), **args)


@pytest.mark.parametrize("encoder", [False, True])
def test_round_trip(tmp_path, encoder):
    b = _bundle(encoder)
    b.save(tmp_path / "b")
    back = IndexBundle.load(tmp_path / "b", verify="full")
    assert np.array_equal(back.index.vectors, b.index.vectors)
    assert back.items == ITEMS and back.ce == b.ce and back.de_model == "minilm" and back.metadata == {"run": 7}
    assert back.normalization == ScoreNormalization(1.5, 0.5)
    x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    assert np.array_equal(back.embed_queries(x), b.embed_queries(x))
    if encoder:
        assert not np.array_equal(back.embed_queries(x), x)
        assert IndexBundle.load(tmp_path / "b", load_query_encoder=False).query_encoder is None
    with pytest.raises(IndexFileError, match="open it with IndexBundle.load"):
        Index.load(tmp_path / "b")
    names = sorted(str(p.relative_to(tmp_path / "b")) for p in (tmp_path / "b").rglob("*"))
    want = ["index", "index/manifest.json", "index/vectors.npy", "items.json", "manifest.json"]
    assert names == sorted(want + (["query_encoder.safetensors"] if encoder else []))


def test_tampered_small_files_are_refused_even_by_default(tmp_path):
    _bundle(True).save(tmp_path / "b")
    for name in ("items.json", "query_encoder.safetensors", "index/manifest.json"):
        f = tmp_path / "b" / name
        good = f.read_bytes()
        data = bytearray(good)
        data[len(data) // 2] ^= 0x01
        f.write_bytes(bytes(data))
        with pytest.raises(IndexFileError, match="SHA-256"):
            IndexBundle.load(tmp_path / "b")
        f.write_bytes(good)
    IndexBundle.load(tmp_path / "b")


def test_nothing_outside_the_directory_is_read(tmp_path):
    _bundle().save(tmp_path / "b")
    secret = tmp_path / "secret.json"
    os.replace(tmp_path / "b" / "items.json", secret)
    os.symlink(secret, tmp_path / "b" / "items.json")
    with pytest.raises(IndexFileError, match="symlink"):
        IndexBundle.load(tmp_path / "b")
    os.remove(tmp_path / "b" / "items.json")
    os.replace(secret, tmp_path / "b" / "items.json")
    doc = json.loads((tmp_path / "b" / "manifest.json").read_text())
    doc["files"]["../secret.json"] = doc["files"]["items.json"]
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(IndexFileError, match="unexpected files"):
        IndexBundle.load(tmp_path / "b")
    _bundle().save(tmp_path / "c")
    os.rename(tmp_path / "c" / "index", tmp_path / "real_index")
    os.symlink(tmp_path / "real_index", tmp_path / "c" / "index")
    with pytest.raises(IndexFileError, match="symlink"):
        IndexBundle.load(tmp_path / "c")


def _write_v01(path, items_file="items.txt"):
    """What `axn-fast index` of axn_fast 0.1 wrote: an index directory with items.txt and CE metadata."""
    V = np.random.default_rng(0).normal(size=(len(ITEMS), 8)).astype(np.float32)
    path.mkdir()
    np.save(path / "vectors.npy", V)
    (path / "items.txt").write_text("".join(t + "\n" for t in ITEMS), encoding="utf-8")
    h = hashlib.sha1()
    for t in ITEMS:
        h.update(t.encode() + b"\n")
    meta = {"created_by": "axn-fast index", "de_model": "bundled-minilm", "ce_model": "bundled-minilm",
            "ce": {"head": "emb-cos", "max_length": 128}, "items_file": items_file, "items_sha1": h.hexdigest()}
    doc = {"format": "axn_fast.index", "format_version": 1, "n_items": len(ITEMS), "dim": 8, "dtype": "float32",
           "normalization": {"alpha": 0.5, "beta": 2.0}, "max_row_norm": 1.0, "metadata": meta, "versions": {},
           "files": {"vectors.npy": {"bytes": (path / "vectors.npy").stat().st_size, "sha256": hashlib.sha256(
               (path / "vectors.npy").read_bytes()).hexdigest()}}}
    (path / "manifest.json").write_text(json.dumps(doc))
    return V


def test_old_cli_directories_open_and_crafted_items_paths_are_refused(tmp_path):
    V = _write_v01(tmp_path / "old")
    b = IndexBundle.load(tmp_path / "old", verify="full")
    assert np.array_equal(b.index.vectors, V) and b.items == ITEMS and b.de_model == "minilm"
    assert b.ce == {"model": "minilm", "head": "emb-cos", "max_length": 128}
    assert b.normalization == ScoreNormalization(0.5, 2.0)
    _write_v01(tmp_path / "evil", items_file="/etc/passwd")  # 0.1's `axn-fast search` printed /etc/passwd
    with pytest.raises(IndexFileError, match="only 'items.txt' inside the directory is read"):
        IndexBundle.load(tmp_path / "evil")
    _write_v01(tmp_path / "link")
    os.remove(tmp_path / "link" / "items.txt")
    os.symlink("/etc/passwd", tmp_path / "link" / "items.txt")
    with pytest.raises(IndexFileError, match="symlink"):
        IndexBundle.load(tmp_path / "link")


def test_save_checks_everything_before_writing(tmp_path):
    with pytest.raises(TypeError, match="query_encoder must be an InductiveMF"):
        _bundle(query_encoder=object()).save(tmp_path / "b")
    b = _bundle()
    b.query_encoder = "not an encoder"  # set after construction: save validates again
    with pytest.raises(TypeError, match="query_encoder must be an InductiveMF"):
        b.save(tmp_path / "b")
    assert not (tmp_path / "b").exists()  # 0.1 had written vectors.npy before refusing
    with pytest.raises(ValueError, match="items has 3 texts but the index has 40"):
        _bundle(items=["a", "b", "c"])
    with pytest.raises(ValueError, match="unknown keys"):
        _bundle(ce={"model": "m", "trust_remote_code": True})
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        _bundle(metadata={"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_a_crafted_query_encoder_is_refused_before_allocating(tmp_path):
    pytest.importorskip("torch", reason="MF_IND needs torch")
    from safetensors.numpy import save_file

    b = _bundle(True)
    b.save(tmp_path / "b")
    f = tmp_path / "b" / "query_encoder.safetensors"
    state = {k: np.ascontiguousarray(v) for k, v in b.query_encoder.state_dict().items()}
    save_file(state, str(f), metadata={"format": "axn_fast.inductive_mf", "dim": "8", "hidden": "4000000"})
    doc = json.loads((tmp_path / "b" / "manifest.json").read_text())
    doc["files"]["query_encoder.safetensors"] = {"bytes": f.stat().st_size,
                                                 "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(IndexFileError, match="do not fit MLPs of dim 8, hidden 4000000"):
        IndexBundle.load(tmp_path / "b")
