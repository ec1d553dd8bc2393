"""Saving and opening an :class:`axn_fast.Index` (``Index.save`` / ``Index.load``).

An index is a directory of plain files, never pickle, so opening one cannot
run code:

- ``vectors.npy``: the item embeddings (n_items, dim) float32;
- ``vectors_f16.npy``: the float16 copy, for ``dtype="float16"`` indexes;
- ``query_encoder.safetensors``: MF_IND weights, when the index carries an
  :class:`~axn_fast.indexing.inductive.InductiveMF` as ``index.query_encoder``;
- ``manifest.json``: format version, dtype, normalisation (alpha, beta),
  ``max_row_norm`` (so opening never scans the vectors), ``index.metadata``, library versions, and the size and
  SHA-256 of every file above.

Opening checks every file's size (a truncated file is refused at once) and the
arrays' headers; the SHA-256 of the arrays is checked too unless ``mmap`` is on
(hashing would read the whole file, which memory-mapping avoids): pass
``verify=True`` to check it anyway. The manifest and the encoder are always
verified.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Optional

import numpy as np

from axn_fast.io.files import atomic_write as _atomic_write, fsync_dir as _fsync_dir

FORMAT = "axn_fast.index"
FORMAT_VERSION = 1
_MANIFEST = "manifest.json"
_VECTORS = "vectors.npy"
_VECTORS16 = "vectors_f16.npy"
_ENCODER = "query_encoder.safetensors"


class IndexFileError(ValueError):
    """A saved index is missing, truncated, tampered with or of an unknown format."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict:
    import axn_fast

    return {"axn_fast": axn_fast.__version__, "numpy": np.__version__, "python": platform.python_version()}


def save_index(index, path, *, overwrite: bool = False) -> Path:
    """Write ``index`` to the directory ``path`` (created; must be empty unless ``overwrite``).

    Saves the float32 vectors, the float16 copy for float16 indexes, the
    normalisation, ``index.metadata`` (must be JSON-serialisable) and
    ``index.query_encoder`` when set (an InductiveMF). Each file is written to a
    temporary name, fsync'd and renamed; the manifest comes last, so a directory
    without one is an unfinished save. Returns the directory.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"path {str(path)!r} exists and is not a directory")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise ValueError(f"directory {str(path)!r} is not empty; pass overwrite=True to replace the index in it")
    path.mkdir(parents=True, exist_ok=True)
    if (path / _MANIFEST).exists():
        os.remove(path / _MANIFEST)  # the old index stops being valid before any file changes
        _fsync_dir(path)
    try:
        metadata_json = json.dumps(index.metadata, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"index.metadata must be JSON-serialisable: {exc}") from exc

    files = {}

    def put_array(name: str, arr: np.ndarray):
        _atomic_write(path / name, lambda f: np.save(f, np.ascontiguousarray(arr), allow_pickle=False))

    put_array(_VECTORS, index.vectors)
    files[_VECTORS] = None
    if index.dtype == "float16":
        put_array(_VECTORS16, index._V16.view(np.float16))
        files[_VECTORS16] = None
    elif (path / _VECTORS16).exists():
        os.remove(path / _VECTORS16)
    encoder = getattr(index, "query_encoder", None)
    if encoder is not None:
        if not hasattr(encoder, "save") or not hasattr(encoder, "embed_queries"):
            raise TypeError(f"index.query_encoder must be an InductiveMF, got {type(encoder).__name__}")
        tmp = path / f".{_ENCODER}.tmp-{os.getpid()}"
        encoder.save(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path / _ENCODER)
        files[_ENCODER] = None
    elif (path / _ENCODER).exists():
        os.remove(path / _ENCODER)
    for name in files:
        files[name] = {"bytes": (path / name).stat().st_size, "sha256": _sha256(path / name)}

    norm = index.normalization
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n_items": index.n_items,
        "dim": index.dim,
        "dtype": index.dtype,
        "normalization": None if norm is None else {"alpha": norm[0], "beta": norm[1]},
        "max_row_norm": float(index.max_row_norm),  # saved so that opening never scans the vectors
        "metadata": json.loads(metadata_json),
        "versions": _versions(),
        "files": files,
    }
    _atomic_write(path / _MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1, sort_keys=True).encode()))
    return path


def _read_manifest(path: Path) -> dict:
    mpath = path / _MANIFEST
    if not path.is_dir():
        raise FileNotFoundError(f"no saved index at {str(path)!r} (expected a directory written by Index.save)")
    if not mpath.is_file():
        raise IndexFileError(f"{str(path)!r} has no {_MANIFEST}: not an index, or its save did not finish")
    try:
        manifest = json.loads(mpath.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexFileError(f"{str(mpath)!r} is not valid JSON (truncated or edited?): {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFileError(f"{str(mpath)!r} is not an axn_fast index manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFileError(f"{str(path)!r} has index format version {manifest.get('format_version')}; this "
                             f"axn_fast reads version {FORMAT_VERSION}")
    for key in ("n_items", "dim", "dtype", "files"):
        if key not in manifest:
            raise IndexFileError(f"{str(mpath)!r} lacks {key!r}")
    return manifest


def _check_file(path: Path, name: str, entry, verify: bool) -> Path:
    fpath = path / name
    if not isinstance(entry, dict) or "bytes" not in entry or "sha256" not in entry:
        raise IndexFileError(f"the manifest's entry for {name!r} is malformed")
    if not fpath.is_file():
        raise IndexFileError(f"{str(fpath)!r} is missing")
    size = fpath.stat().st_size
    if size != entry["bytes"]:
        raise IndexFileError(f"{str(fpath)!r} has {size} bytes, the manifest says {entry['bytes']} "
                             "(truncated or replaced)")
    if verify and _sha256(fpath) != entry["sha256"]:
        raise IndexFileError(f"{str(fpath)!r} does not match its SHA-256 in the manifest (modified or corrupt)")
    return fpath


def _load_array(fpath: Path, mmap: bool, dtype, shape) -> np.ndarray:
    try:
        arr = np.load(fpath, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise IndexFileError(f"{str(fpath)!r} is not a readable .npy array: {exc}") from exc
    if arr.dtype != np.dtype(dtype) or arr.shape != tuple(shape) or not arr.flags.c_contiguous:
        raise IndexFileError(f"{str(fpath)!r} holds {arr.dtype} {arr.shape}, the manifest says "
                             f"{np.dtype(dtype).name} {tuple(shape)}")
    return arr


def load_index(path, *, mmap: bool = True, num_threads: int = 0, verify: Optional[bool] = None,
               load_query_encoder: bool = True):
    """Open an index written by :func:`save_index`.

    mmap : memory-map the arrays (opening a 1M x 768 index reads only headers).
    num_threads : threads per search of the opened index (0 = all cores).
    verify : check the arrays' SHA-256 (default: only when not memory-mapping).
    load_query_encoder : load MF_IND weights into ``index.query_encoder`` when
        present (needs torch); False leaves ``index.query_encoder = None``.

    Raises :class:`IndexFileError` (a ValueError) when a file is missing,
    truncated, modified or inconsistent with the manifest.
    """
    from axn_fast.search.index import Index

    path = Path(path)
    if verify is None:
        verify = not mmap
    manifest = _read_manifest(path)
    files = manifest["files"]
    if not isinstance(files, dict) or _VECTORS not in files:
        raise IndexFileError(f"the manifest in {str(path)!r} lists no {_VECTORS}")
    n, d, dtype = manifest["n_items"], manifest["dim"], manifest["dtype"]
    if not (isinstance(n, int) and isinstance(d, int) and n >= 1 and d >= 1 and dtype in ("float32", "float16")):
        raise IndexFileError(f"the manifest in {str(path)!r} has invalid n_items/dim/dtype: {n!r}, {d!r}, {dtype!r}")
    V32 = _load_array(_check_file(path, _VECTORS, files[_VECTORS], verify), mmap, np.float32, (n, d))
    V16 = None
    if dtype == "float16":
        if _VECTORS16 not in files:
            raise IndexFileError(f"the float16 index in {str(path)!r} lists no {_VECTORS16}")
        V16 = _load_array(_check_file(path, _VECTORS16, files[_VECTORS16], verify), mmap, np.float16, (n, d))
    max_row_norm = manifest.get("max_row_norm")
    if max_row_norm is not None and (isinstance(max_row_norm, bool) or not isinstance(max_row_norm, (int, float))
                                     or not np.isfinite(max_row_norm) or max_row_norm < 0):
        raise IndexFileError(f"the manifest in {str(path)!r} has an invalid max_row_norm: {max_row_norm!r}")
    norm = manifest.get("normalization")
    if norm is not None:
        try:
            norm = (float(norm["alpha"]), float(norm["beta"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFileError(f"the manifest in {str(path)!r} has an invalid normalization {norm!r}") from exc
    try:
        index = Index._from_arrays(V32, dtype=dtype, num_threads=num_threads, normalization=norm, V16=V16,
                                   max_row_norm=max_row_norm)
    except ValueError as exc:
        raise IndexFileError(f"the index in {str(path)!r} is inconsistent: {exc}") from exc
    metadata = manifest.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise IndexFileError(f"the manifest in {str(path)!r} has non-dict metadata")
    index.metadata = metadata
    index.query_encoder = None
    if _ENCODER in files and load_query_encoder:
        from axn_fast.indexing.inductive import InductiveMF

        fpath = _check_file(path, _ENCODER, files[_ENCODER], True)
        try:
            enc = InductiveMF.load(fpath)
        except ImportError as exc:
            raise ImportError(f"{str(path)!r} carries an MF_IND query encoder, which needs torch and safetensors "
                              "(pip install 'axn_fast[ce]'); or open it with load_query_encoder=False") from exc
        if enc.dim != d:
            raise IndexFileError(f"the query encoder in {str(path)!r} has dim {enc.dim}, the index {d}")
        index.query_encoder = enc
    return index
