"""Manifests (JSON: format, version, and the size and SHA-256 of every file) and safe ``.npy`` files.

A saved directory is trusted only through its manifest: every file it names is
opened with :func:`~axn_fast.io.files.confined` (nothing outside the directory,
no symlinks), its size is compared with the manifest before anything is read,
and a ``.npy`` header's declared shape and dtype are compared with the file's
size before any array is allocated or mapped — a tiny file cannot make the
reader allocate gigabytes. Never pickle: arrays are read with
``allow_pickle=False`` and object dtypes are refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from axn_fast.io.files import PathLike, atomic_write, open_confined, read_json, sha256_file

MANIFEST = "manifest.json"
_NUMERIC_KINDS = "biuf"


class SavedFileError(ValueError):
    """A saved file or directory is missing, truncated, tampered with, unsafe or of an unknown format."""


def file_entry(path: PathLike) -> Dict[str, Any]:
    """The manifest entry of a file: ``{"bytes": size, "sha256": hex digest}``."""
    path = Path(path)
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def check_file(root: PathLike, name: str, entry: Any, *, hash: bool, error: type = SavedFileError) -> Path:
    """Open the file ``name`` of ``root`` as its manifest entry describes it.

    Checks that the path is confined to ``root`` (no symlink, nothing outside),
    that it is a regular file of the listed size and, with ``hash``, that its
    SHA-256 matches. Returns the path; raises ``error`` (a ValueError subclass).
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int) or isinstance(
            entry.get("bytes"), bool) or not isinstance(entry.get("sha256"), str):
        raise error(f"the manifest's entry for {name!r} is malformed (wants bytes and sha256)")
    try:
        path = open_confined(root, name)
    except FileNotFoundError:
        raise error(f"{str(Path(root) / name)!r} is missing") from None
    except ValueError as exc:
        raise error(str(exc)) from None
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise error(f"{str(path)!r} has {size} bytes, the manifest says {entry['bytes']} (truncated or replaced)")
    if hash and sha256_file(path) != entry["sha256"]:
        raise error(f"{str(path)!r} does not match its SHA-256 in the manifest (modified or corrupt)")
    return path


def read_manifest(root: PathLike, *, fmt: str, versions: Sequence[int], error: type = SavedFileError,
                  what: str = "saved directory") -> Dict[str, Any]:
    """Read and check ``root/manifest.json``: a JSON object whose ``format`` is ``fmt`` and
    ``format_version`` one of ``versions``. Raises FileNotFoundError for a missing directory,
    ``error`` for everything else."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no {what} at {str(root)!r} (expected a directory)")
    try:
        path = open_confined(root, MANIFEST)
    except FileNotFoundError:
        raise error(f"{str(root)!r} has no {MANIFEST}: not a {what}, or its save did not finish") from None
    except ValueError as exc:
        raise error(str(exc)) from None
    try:
        doc = read_json(path, max_bytes=16 << 20, what="manifest")
    except ValueError as exc:
        raise error(str(exc)) from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise error(f"{str(path)!r} is not a {what} manifest (format {found!r}, expected {fmt!r})")
    version = doc.get("format_version")
    if isinstance(version, bool) or version not in versions:
        raise error(f"{str(root)!r} has {what} format version {version!r}; this axn_fast reads "
                    f"version{'s' if len(versions) > 1 else ''} {', '.join(map(str, versions))}")
    return doc


# ---------------------------------------------------------------------------- .npy
@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` file declares: shape, dtype, memory order and where the data start."""

    shape: Tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize


def read_npy_header(path: PathLike, *, error: type = SavedFileError) -> NpyHeader:
    """Parse a ``.npy`` header without reading (or allocating) the data; refuse object dtypes."""
    path = Path(path)
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except (ValueError, OSError, SyntaxError) as exc:
        raise error(f"{str(path)!r} is not a readable .npy array: {exc}") from exc
    if dtype.hasobject or dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
        raise error(f"{str(path)!r} is not a readable .npy array: dtype {dtype} (only plain numbers are read; "
                    "never pickle)")
    if any((not isinstance(s, int)) or s < 0 for s in shape):
        raise error(f"{str(path)!r} declares an invalid shape {shape}")
    return NpyHeader(tuple(int(s) for s in shape), dtype, bool(fortran), int(offset))


def load_npy(path: PathLike, *, dtype: Any, shape: Optional[Sequence[int]] = None, mmap: bool = False,
             error: type = SavedFileError) -> np.ndarray:
    """Read (or memory-map, read-only) a ``.npy`` array after checking its header.

    The header must declare ``dtype`` (little-endian or native), C order and, when
    given, ``shape``; the file must be exactly header + data bytes long. Checked
    before any allocation, so a header that claims more than the file holds is
    refused at once.
    """
    path = Path(path)
    head = read_npy_header(path, error=error)
    want = np.dtype(dtype)
    if head.dtype.newbyteorder("=") != want.newbyteorder("=") or head.dtype.byteorder == ">":
        raise error(f"{str(path)!r} holds {head.dtype.str} data, expected {want.name} (little-endian)")
    if head.fortran_order:
        raise error(f"{str(path)!r} is stored in Fortran (column-major) order; expected C order")
    if shape is not None and head.shape != tuple(shape):
        raise error(f"{str(path)!r} holds {want.name} {head.shape}, expected {want.name} {tuple(shape)}")
    size = path.stat().st_size
    if head.data_offset + head.nbytes != size:
        raise error(f"{str(path)!r} declares {head.shape} {want.name} ({head.nbytes} bytes) but holds "
                    f"{size - head.data_offset} data bytes (truncated or crafted)")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise error(f"{str(path)!r} is not a readable .npy array: {exc}") from exc
    if not mmap:
        arr.flags.writeable = False
    return arr


def save_npy(path: PathLike, arr: np.ndarray) -> None:
    """Write a C-ordered, little-endian ``.npy`` file atomically (never pickle)."""
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    atomic_write(path, lambda f: np.save(f, a, allow_pickle=False))


def check_files_listed(doc: Mapping[str, Any], names: Sequence[str], *, error: type = SavedFileError) -> None:
    """Refuse a manifest whose ``files`` mapping lacks one of ``names``."""
    files = doc.get("files")
    if not isinstance(files, dict):
        raise error("the manifest has no 'files' mapping")
    for n in names:
        if n not in files:
            raise error(f"the manifest lists no {n!r}")
