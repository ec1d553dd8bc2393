"""The files of a saved :class:`axn_fast.Index`: its vectors, nothing else.

A saved index is a directory of plain files, never pickle, so opening one cannot
run code:

- ``vectors.npy``: the item embeddings (n_items, dim) float32, C order;
- ``manifest.json``: format and version, n_items, dim, scan dtype, the index's
  JSON metadata, library versions, and the size and SHA-256 of ``vectors.npy``.

What a saved *search* needs besides the vectors (query encoder, normalisation,
item texts, cross-encoder) lives in an :class:`axn_fast.indexing.bundle.IndexBundle`.
Nothing derived is stored: the float16 copy of a ``dtype="float16"`` index and
``max_row_norm`` are recomputed from the float32 vectors, so a tampered copy
cannot make searches wrong.

Verification on open (``verify=``):

- ``"cheap"`` (default): the manifest (size- and depth-capped JSON), the file's
  size against the manifest, the ``.npy`` header (dtype, C order, shape)
  against the manifest *and* the file's size — all before anything is
  allocated or mapped; the vectors' finiteness when they are read into memory
  (``mmap=False``) or small (<= 64 MiB). A same-size edit of a large
  memory-mapped file is not detected.
- ``"full"``: also the SHA-256 of every file and the finiteness of the vectors
  (reads everything once; what the command line uses).

A memory-mapped file that shrinks *after* opening makes the next search die
with SIGBUS: nothing can guard against a file changed under an open mapping.

Format version 1 (axn_fast <= 0.1, which also stored a float16 copy,
``max_row_norm``, a normalisation and a query encoder) is still opened: its
vectors are read as above and the rest is ignored here (an
:class:`~axn_fast.indexing.bundle.IndexBundle` reads them).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from axn_fast._version import __version__
from axn_fast.io.files import PathLike, atomic_write_json, fsync_dir, tmp_name
from axn_fast.io.manifest import MANIFEST, SavedFileError, check_file, file_entry, load_npy, read_manifest, save_npy

FORMAT = "axn_fast.index"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
VECTORS = "vectors.npy"
VERIFY_MODES = ("cheap", "full")
_SMALL = 64 << 20

Verify = Union[str, bool, None]


class IndexFileError(SavedFileError):
    """A saved index is missing, truncated, tampered with, unsafe or of an unknown format."""


def check_verify(verify: Verify) -> str:
    """Normalise ``verify``: "cheap" | "full" (True means "full"; None and False mean "cheap")."""
    if verify is None or verify is False:
        return "cheap"
    if verify is True:
        return "full"
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be 'cheap' or 'full', got {verify!r}")
    return str(verify)


def versions() -> Dict[str, str]:
    """Library versions recorded in every manifest (informative only)."""
    return {"axn_fast": __version__, "numpy": np.__version__, "python": platform.python_version()}


def prepare_directory(path: PathLike, *, overwrite: bool, what: str = "path") -> Path:
    """Check that ``path`` may receive a saved directory: absent, an empty directory, or
    (with ``overwrite``) a directory to replace. Returns it as a Path; writes nothing."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{what} {str(path)!r} is a symlink; give the real directory")
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{what} {str(path)!r} exists and is not a directory")
        if any(path.iterdir()) and not overwrite:
            raise ValueError(f"directory {str(path)!r} is not empty; pass overwrite=True to replace what is in it")
    return path


def publish_directory(tmp: Path, path: Path) -> None:
    """Move the finished directory ``tmp`` to ``path`` (replacing an old one) and make it durable.

    A reader sees the old directory or the new one: an old one is first renamed
    aside, then the new one renamed into place, then the old one removed.
    """
    fsync_dir(tmp)
    old: Optional[Path] = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def staging_directory(path: Path) -> Path:
    """A fresh temporary sibling of ``path`` to write a saved directory into before publishing it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def save_vectors(path: PathLike, vectors: np.ndarray, *, dtype: str = "float32",
                 metadata: Optional[Dict[str, Any]] = None, overwrite: bool = False) -> Path:
    """Write an index's vectors to the directory ``path``; returns it.

    vectors : (n_items, dim) float32, finite.
    dtype : the index's scan precision ("float32" | "float16"), recorded only.
    metadata : JSON-serialisable dict stored in the manifest.
    overwrite : replace an existing non-empty directory.

    Everything is checked before anything is written; the files go to a
    temporary directory that is renamed into place when complete.
    """
    V = np.asarray(vectors)
    if V.dtype != np.float32 or V.ndim != 2 or V.shape[0] < 1 or V.shape[1] < 1:
        raise ValueError(f"vectors must be a non-empty 2-D float32 array, got {V.dtype} {V.shape}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    meta = {} if metadata is None else metadata
    if not isinstance(meta, dict):
        raise TypeError(f"metadata must be a dict, got {type(meta).__name__}")
    try:
        meta = json.loads(json.dumps(meta, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"index.metadata must be JSON-serialisable: {exc}") from exc
    path = prepare_directory(path, overwrite=overwrite)
    tmp = staging_directory(path)
    try:
        save_npy(tmp / VECTORS, V)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "n_items": int(V.shape[0]),
                    "dim": int(V.shape[1]), "dtype": dtype, "metadata": meta, "versions": versions(),
                    "files": {VECTORS: file_entry(tmp / VECTORS)}}
        atomic_write_json(tmp / MANIFEST, manifest)
        publish_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


@dataclass
class SavedVectors:
    """What :func:`load_vectors` returns: the float32 vectors (read-only; a memmap with mmap),
    the recorded scan dtype, the metadata and the whole manifest."""

    vectors: np.ndarray
    dtype: str
    metadata: Dict[str, Any] = field(default_factory=dict)
    manifest: Dict[str, Any] = field(default_factory=dict)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def load_vectors(path: PathLike, *, mmap: bool = True, verify: Verify = "cheap") -> SavedVectors:
    """Open the vectors written by :func:`save_vectors` (format 2) or by axn_fast 0.1 (format 1).

    mmap : memory-map the vectors (opening reads only headers) instead of reading them.
    verify : "cheap" or "full", see the module docstring.

    Raises FileNotFoundError when ``path`` is not a directory and
    :class:`IndexFileError` (a ValueError) when a file is missing, truncated,
    tampered with (as far as ``verify`` checks), unsafe (a symlink, a name
    outside the directory) or inconsistent with the manifest.
    """
    mode = check_verify(verify)
    root = Path(path)
    try:
        doc = read_manifest(root, fmt=FORMAT, versions=READABLE_VERSIONS, error=IndexFileError, what="saved index")
    except IndexFileError as exc:
        if "'axn_fast.bundle'" in str(exc):
            raise IndexFileError(f"{exc}; it is a saved search: open it with IndexBundle.load") from None
        raise
    n_raw, d_raw, dtype, files = doc.get("n_items"), doc.get("dim"), doc.get("dtype"), doc.get("files")
    if not (isinstance(n_raw, int) and isinstance(d_raw, int) and _is_int(n_raw) and _is_int(d_raw)
            and n_raw >= 1 and d_raw >= 1 and dtype in ("float32", "float16")):
        raise IndexFileError(f"the manifest in {str(root)!r} has invalid n_items/dim/dtype: {n_raw!r}, {d_raw!r}, "
                             f"{dtype!r}")
    n, d = int(n_raw), int(d_raw)
    if not isinstance(files, dict) or VECTORS not in files:
        raise IndexFileError(f"the manifest in {str(root)!r} lists no {VECTORS}")
    fpath = check_file(root, VECTORS, files[VECTORS], hash=mode == "full", error=IndexFileError)
    V = load_npy(fpath, dtype=np.float32, shape=(n, d), mmap=mmap, error=IndexFileError)
    if mode == "full" or not mmap or fpath.stat().st_size <= _SMALL:
        for s in range(0, n, 1 << 16):
            block = V[s:s + (1 << 16)]
            if not np.isfinite(block).all():
                bad = s + int(np.argwhere(~np.isfinite(block))[0][0])
                raise IndexFileError(f"{str(fpath)!r} holds a non-finite value (NaN or inf) in row {bad}")
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise IndexFileError(f"the manifest in {str(root)!r} has non-dict metadata")
    return SavedVectors(V, str(dtype), metadata, doc)
