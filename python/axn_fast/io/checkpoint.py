"""The one resumable checkpoint format of every long cross-encoder job.

A job is a fixed, ordered list of ``n_units`` *units* (for a score matrix, one
unit per (query, item) pair, in the order the job's configuration defines);
each unit's result is ``width`` numbers of one ``dtype``. The checkpoint keeps
which units are done and their results, keyed by unit number — never by the
batch layout — so a job resumed with another batch size, thread count or order
re-pays only what was in flight when it died.

Directory layout::

    checkpoint.json        format, version, kind, layout, configuration + its SHA-256, CE identity
    lock                   fcntl lock held while a job runs (released by the kernel if it dies)
    shard-NNNNN.journal    records appended as results arrive (units shard_units*N ...)
    shard-NNNNN.bin        a finished shard: all its results in one checksummed record

Each journal record is ``b"AXR1" | n (u32) | crc32 (u32) | 0 (u32) | unit ids
(n x i64) | results (n x width x dtype)``, the CRC covering ids and results;
it is handed to the operating system (written and flushed) before
:meth:`Checkpoint.record` returns, which is all a killed *process* needs, and
fsync'd at least every ``sync_every_s`` seconds (default 1 s) and on close,
which bounds what an OS crash or power cut can lose. A record
torn by a kill fails its CRC or length and is dropped (with everything after
it). A shard whose units are all done is written to a temporary file, fsync'd
and renamed to ``shard-NNNNN.bin`` (``b"AXS1" | n_units (u64) | width (u32) |
crc32 (u32)`` then the results), after which its journal is deleted.

Guarantees:

- **Resume**: every result recorded before the process was killed is kept;
  what it was computing at the kill (at most one batch) is re-paid. After an
  OS crash or power cut, at most the results of the last ``sync_every_s``
  seconds are lost as well.
- **Same job only**: the configuration's SHA-256 is stored and a different
  configuration (or layout) is refused with the keys that differ.
- **Same model only**: :meth:`Checkpoint.check_identity` stores an explicit
  ``ce_id`` or a fingerprint (the results of a few fixed units) and refuses a
  resume whose identity differs.
- **One job at a time**: a second job on the directory gets
  :class:`~axn_fast.io.files.DirectoryBusyError` at once.
- Leftover temporary files and the journals of finished shards are removed
  when the checkpoint is opened.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import zlib
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Type

import numpy as np

from axn_fast.io.files import (DirectoryLock, PathLike, UnsafePathError, atomic_write, atomic_write_json,
                               confined, read_json, remove_stale_tmp)

FORMAT = "axn_fast.checkpoint"
FORMAT_VERSION = 1
MANIFEST = "checkpoint.json"
LOCK = "lock"
_REC = struct.Struct("<4sIII")
_REC_MAGIC = b"AXR1"
_SHARD = struct.Struct("<4sQII")
_SHARD_MAGIC = b"AXS1"
_DTYPES = ("float32", "float64", "int64")


class CheckpointMismatch(ValueError):
    """The checkpoint directory belongs to another job (configuration or cross-encoder differ)."""


class CheckpointCorrupt(ValueError):
    """A checkpoint file is unreadable in a way a resume cannot repair (delete the file named)."""


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 of a configuration's canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, allow_nan=False).encode("utf-8")).hexdigest()


def digest_arrays(*arrays: Optional[np.ndarray]) -> str:
    """SHA-256 over arrays' dtypes, shapes and bytes (None hashes as a marker): for configurations."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"<none>")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def digest_texts(texts: Any) -> str:
    """SHA-256 of a sequence of texts (or anything with a stable ``repr``), separator-safe."""
    h = hashlib.sha256()
    for t in texts:
        b = (t if isinstance(t, str) else repr(t)).encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


class Checkpoint:
    """Durable results of a job of ``n_units`` units, each ``width`` numbers of ``dtype``.

    Open it with a ``with`` statement (or :meth:`open` / :meth:`close`); while open
    the directory is locked. ``values`` (n_units, width) holds the results and
    ``done`` (n_units,) bool says which are valid.

    Parameters
    ----------
    directory : created if missing; must not be a file.
    kind : what the job is (e.g. ``"score_matrix"``); part of the configuration.
    config : JSON-able description of the job; a resume must give the same one.
        Put in it everything that changes which units exist or what their
        results are (inputs' digests, seeds, strategy ...), never batch sizes.
    n_units, width, dtype, shard_units : the layout (also part of the configuration).
    sync_every_s : most seconds between fsyncs of a journal (0: fsync every record).
    """

    def __init__(self, directory: PathLike, *, kind: str, config: Mapping[str, Any], n_units: int,
                 width: int = 1, dtype: str = "float32", shard_units: int = 8192, sync_every_s: float = 1.0):
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty string, got {kind!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        for name, v in (("n_units", n_units), ("width", width), ("shard_units", shard_units)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(sync_every_s, (int, float)) or isinstance(sync_every_s, bool) or not (
                0 <= sync_every_s < float("inf")):
            raise ValueError(f"sync_every_s must be a finite number >= 0, got {sync_every_s!r}")
        self.sync_every_s = float(sync_every_s)
        self._last_sync = time.monotonic()
        self._dirty: Set[int] = set()
        self.dir = Path(directory)
        self.kind = kind
        self.n_units, self.width, self.shard_units = int(n_units), int(width), int(shard_units)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        try:
            body = json.loads(json.dumps(dict(config), sort_keys=True, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"config must be JSON-serialisable: {exc}") from exc
        self.config: Dict[str, Any] = {**body, "_kind": kind, "_n_units": self.n_units, "_width": self.width,
                                       "_dtype": dtype, "_shard_units": self.shard_units}
        self.config_sha256 = config_digest(self.config)
        self.n_shards = -(-self.n_units // self.shard_units)
        self.values = np.zeros((self.n_units, self.width), dtype=self.dtype)
        self.done = np.zeros(self.n_units, dtype=bool)
        self._lock = DirectoryLock(self.dir, LOCK)
        self._doc: Dict[str, Any] = {}
        self._journals: Dict[int, Any] = {}
        self._finished = np.zeros(self.n_shards, dtype=bool)

    # ------------------------------------------------------------------ open / close
    def open(self) -> "Checkpoint":
        """Lock the directory, check or write its configuration, and read every result on disk
        (a no-op when already open)."""
        if self._lock.held:
            return self
        if self.dir.exists() and not self.dir.is_dir():
            raise NotADirectoryError(f"checkpoint_dir {str(self.dir)!r} exists and is not a directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            remove_stale_tmp(self.dir)
            self._read_or_write_manifest()
            for s in range(self.n_shards):
                self._load_shard(s)
        except BaseException:
            self._lock.release()
            raise
        return self

    def close(self) -> None:
        """fsync and close the journals and release the lock (results stay on disk)."""
        for f in self._journals.values():
            try:
                f.flush()
                os.fsync(f.fileno())
            finally:
                f.close()
        self._journals.clear()
        self._lock.release()

    def __enter__(self) -> "Checkpoint":
        return self.open()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def _path(self, name: str) -> Path:
        try:
            return confined(self.dir, name)
        except UnsafePathError as exc:
            raise CheckpointCorrupt(f"checkpoint_dir {str(self.dir)!r}: {exc}") from None

    def _read_or_write_manifest(self) -> None:
        path = self._path(MANIFEST)
        if not path.exists():
            old = self.dir / "manifest.json"
            if old.exists():
                raise CheckpointMismatch(
                    f"checkpoint_dir {str(self.dir)!r} holds a checkpoint of an older axn_fast (manifest.json); "
                    "delete the directory to start afresh")
            self._doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind,
                         "config_sha256": self.config_sha256, "config": self.config, "identity": None}
            atomic_write_json(path, self._doc)
            return
        try:
            doc = read_json(path, max_bytes=16 << 20, what="checkpoint manifest")
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError("not an axn_fast checkpoint")
        except ValueError as exc:
            raise CheckpointCorrupt(f"checkpoint_dir {str(self.dir)!r} has an unreadable {MANIFEST} ({exc}); "
                                    "delete the directory to start afresh") from None
        if doc.get("format_version") != FORMAT_VERSION:
            raise CheckpointMismatch(f"checkpoint_dir {str(self.dir)!r} has checkpoint format version "
                                     f"{doc.get('format_version')!r}; this axn_fast writes {FORMAT_VERSION}")
        if doc.get("config_sha256") != self.config_sha256:
            prev = doc.get("config")
            prev_config: Dict[str, Any] = prev if isinstance(prev, dict) else {}
            diff = sorted(k.lstrip("_") for k in set(self.config) | set(prev_config)
                          if self.config.get(k) != prev_config.get(k))
            raise CheckpointMismatch(
                f"checkpoint_dir {str(self.dir)!r} holds a {doc.get('kind')!r} job with a different "
                f"configuration (differs in: {', '.join(diff) or 'its hash'}); use "
                "another directory or delete it to start afresh")
        self._doc = doc

    # ------------------------------------------------------------------ identity
    def check_identity(self, ce_id: Optional[str], probe: Callable[[], np.ndarray], *,
                       rtol: float = 1e-3, atol: float = 1e-6) -> Optional[np.ndarray]:
        """Tie the checkpoint to one cross-encoder, or refuse a resume with another one.

        With ``ce_id`` (a string naming the model and everything that changes its
        scores) the id is stored on first use and must be equal on resume. Without
        it, ``probe()`` computes the results of a few fixed units (the caller
        chooses them; the same ones every time): stored on first use, recomputed
        and compared (``rtol``/``atol``) on resume. Returns what ``probe`` returned
        (so the caller can record those results) or None when it was not called.
        Raises :class:`CheckpointMismatch`.
        """
        stored = self._doc.get("identity")
        if ce_id is not None and not isinstance(ce_id, str):
            raise TypeError(f"ce_id must be a string, got {type(ce_id).__name__}")
        if stored is None:
            got = None
            if ce_id is not None:
                ident: Dict[str, Any] = {"ce_id": ce_id}
            else:
                got = np.asarray(probe(), dtype=np.float64).reshape(-1)
                ident = {"fingerprint": [float(x) for x in got]}
            self._doc = {**self._doc, "identity": ident}
            atomic_write_json(self._path(MANIFEST), self._doc)
            return got
        if not isinstance(stored, dict):
            raise CheckpointCorrupt(f"checkpoint_dir {str(self.dir)!r} has a malformed identity in {MANIFEST}")
        if "ce_id" in stored:
            if ce_id != stored["ce_id"]:
                raise CheckpointMismatch(
                    f"checkpoint_dir {str(self.dir)!r} was scored by the cross-encoder {stored['ce_id']!r}, "
                    f"this job's is {ce_id!r}; resume with the same ce_id, or use another directory")
            return None
        if ce_id is not None:
            raise CheckpointMismatch(
                f"checkpoint_dir {str(self.dir)!r} identifies its cross-encoder by a score fingerprint (it was "
                f"written without ce_id); resume without ce_id, or use another directory")
        want = np.asarray(stored.get("fingerprint", []), dtype=np.float64)
        got = np.asarray(probe(), dtype=np.float64).reshape(-1)
        if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=atol + rtol * float(
                np.max(np.abs(want), initial=0.0))):
            raise CheckpointMismatch(
                f"checkpoint_dir {str(self.dir)!r} was scored by another cross-encoder: the fingerprint pairs "
                f"score {np.round(got, 5).tolist()} now, {np.round(want, 5).tolist()} then; use another "
                "directory (or pass the same cross-encoder)")
        return got

    # ------------------------------------------------------------------ shards and journals
    def shard_range(self, s: int) -> range:
        return range(s * self.shard_units, min(self.n_units, (s + 1) * self.shard_units))

    def _shard_name(self, s: int) -> str:
        return f"shard-{s:05d}.bin"

    def _journal_name(self, s: int) -> str:
        return f"shard-{s:05d}.journal"

    def _load_shard(self, s: int) -> None:
        r = self.shard_range(s)
        path = self._path(self._shard_name(s))
        jpath = self._path(self._journal_name(s))
        if path.exists():
            data = path.read_bytes()
            n = len(r)
            nbytes = n * self.width * self.dtype.itemsize
            ok = len(data) == _SHARD.size + nbytes
            if ok:
                magic, n_units, width, crc = _SHARD.unpack_from(data, 0)
                body = data[_SHARD.size:]
                ok = magic == _SHARD_MAGIC and n_units == n and width == self.width and zlib.crc32(body) == crc
            if not ok:
                raise CheckpointCorrupt(f"checkpoint shard {str(path)!r} is corrupt (size, header or checksum); "
                                        "delete it to recompute that shard")
            self.values[r.start:r.stop] = np.frombuffer(body, dtype=self.dtype).reshape(n, self.width)
            self.done[r.start:r.stop] = True
            self._finished[s] = True
            if jpath.exists():  # the shard was renamed into place before its journal was removed
                os.remove(jpath)
            return
        if jpath.exists():
            self._read_journal(s, jpath)

    def _read_journal(self, s: int, path: Path) -> None:
        r = self.shard_range(s)
        data = path.read_bytes()
        pos = good = 0
        item = self.dtype.itemsize * self.width
        while pos + _REC.size <= len(data):
            magic, n, crc, _ = _REC.unpack_from(data, pos)
            end = pos + _REC.size + n * (8 + item)
            if magic != _REC_MAGIC or n == 0 or end > len(data):
                break
            body = data[pos + _REC.size:end]
            if zlib.crc32(body) != crc:
                break
            ids = np.frombuffer(body[:8 * n], dtype="<i8")
            if ids.min() < r.start or ids.max() >= r.stop:
                break
            self.values[ids] = np.frombuffer(body[8 * n:], dtype=self.dtype).reshape(n, self.width)
            self.done[ids] = True
            pos = good = end
        if good < len(data):  # a record torn by a kill (or damaged): drop it and what follows
            with open(path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())

    def record(self, units: Any, values: Any) -> None:
        """Store the results of ``units`` (int array) durably: ``values`` (len(units), width) or (len(units),).

        Returns once the results are written to the operating system (fsync'd
        at most ``sync_every_s`` seconds later); a shard whose units are then all
        done is compacted into its ``.bin`` file.
        """
        ids = np.asarray(units, dtype=np.int64).reshape(-1)
        vals = np.ascontiguousarray(np.asarray(values, dtype=self.dtype).reshape(len(ids), self.width))
        if ids.size == 0:
            return
        if ids.min() < 0 or ids.max() >= self.n_units:
            raise ValueError(f"units must lie in [0, {self.n_units}), got [{ids.min()}, {ids.max()}]")
        shard_of = ids // self.shard_units
        for s in np.unique(shard_of):
            s = int(s)
            sel = shard_of == s
            if self._finished[s]:
                continue
            sid, sval = np.ascontiguousarray(ids[sel]), np.ascontiguousarray(vals[sel])
            body = sid.astype("<i8").tobytes() + sval.tobytes()
            f = self._journals.get(s)
            if f is None:
                f = self._journals[s] = open(self._path(self._journal_name(s)), "ab")
            f.write(_REC.pack(_REC_MAGIC, len(sid), zlib.crc32(body), 0) + body)
            f.flush()
            self._dirty.add(s)
            if time.monotonic() - self._last_sync >= self.sync_every_s:
                self.sync()
            self.values[sid] = sval
            self.done[sid] = True
            r = self.shard_range(s)
            if self.done[r.start:r.stop].all():
                self._finish_shard(s)

    def sync(self) -> None:
        """fsync every journal written since the last sync (``record`` does it every ``sync_every_s``)."""
        for s in sorted(self._dirty):
            f = self._journals.get(s)
            if f is not None:
                os.fsync(f.fileno())
        self._dirty.clear()
        self._last_sync = time.monotonic()

    def _finish_shard(self, s: int) -> None:
        r = self.shard_range(s)
        body = np.ascontiguousarray(self.values[r.start:r.stop]).tobytes()
        head = _SHARD.pack(_SHARD_MAGIC, len(r), self.width, zlib.crc32(body))
        atomic_write(self._path(self._shard_name(s)), lambda f: (f.write(head), f.write(body)))
        f = self._journals.pop(s, None)
        self._dirty.discard(s)
        if f is not None:
            f.close()
        try:
            os.remove(self._path(self._journal_name(s)))
        except FileNotFoundError:
            pass
        self._finished[s] = True

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    def pending(self) -> np.ndarray:
        """Unit numbers not done yet, ascending (int64)."""
        return np.flatnonzero(~self.done).astype(np.int64)

    def files(self) -> List[str]:
        """Names of the shard and journal files present (for tests and tools)."""
        return sorted(p.name for p in self.dir.iterdir() if p.name.startswith("shard-"))
