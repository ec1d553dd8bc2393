"""Durable, confined files: the primitives every on-disk format of the package is written with.

- :func:`atomic_write`: write to a temporary sibling, fsync it, rename it over the
  target, fsync the directory — a reader sees the old file or the new one, never
  half of one, even after a power cut.
- :func:`confined`: the one way a format opens a file named by a manifest. The
  name must be a plain relative name inside the directory, and neither it nor
  any component on the way may be a symlink: nothing outside the directory is
  ever read.
- :func:`read_json`: JSON with a size cap and a nesting cap (no RecursionError
  from a crafted file).
- :class:`DirectoryLock`: an exclusive lock file, so two jobs on one directory
  fail clearly instead of both paying for the same work.
- :func:`remove_stale_tmp`: leftovers of a killed writer.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Callable, Optional, Type, Union

PathLike = Union[str, "os.PathLike[str]"]

#: Prefix of every temporary file written by :func:`atomic_write` (so a cleanup can find them).
TMP_MARK = ".tmp-"
_JSON_MAX_BYTES = 64 << 20
_JSON_MAX_DEPTH = 64


class UnsafePathError(ValueError):
    """A file named by a saved directory lies outside it, is a symlink, or is not a regular file."""


def fsync_dir(path: PathLike) -> None:
    """fsync a directory so a rename or unlink inside it is durable (a no-op where unsupported)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tmp_name(path: Path) -> Path:
    """The temporary sibling :func:`atomic_write` uses for ``path`` (hidden, marked with the pid)."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Create or replace ``path`` atomically with what ``write(binary_file)`` writes.

    The data go to a temporary sibling that is flushed and fsync'd, then renamed
    over ``path``; the directory is fsync'd last. On an exception the temporary
    file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """:func:`atomic_write` of a bytes object."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: PathLike, doc: Any) -> None:
    """:func:`atomic_write` of a JSON document (sorted keys, UTF-8; ``doc`` must be plain JSON data)."""
    atomic_write_bytes(path, json.dumps(doc, indent=1, sort_keys=True, allow_nan=False).encode("utf-8"))


def sha256_file(path: PathLike, *, block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def confined(root: PathLike, name: str) -> Path:
    """The path of the file ``name`` inside the directory ``root``, refusing anything that could escape it.

    ``name`` must be a relative path of plain components (no ``..``, no absolute
    path, no empty component). Neither ``root``'s entries on the way nor the file
    itself may be symlinks, and the resolved path must lie inside the resolved
    ``root``. The file need not exist. Raises :class:`UnsafePathError`.
    """
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise UnsafePathError(f"file name {name!r} is not a plain relative name")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UnsafePathError(f"file name {name!r} is not a plain relative name inside the directory")
    base = Path(root).resolve()
    cur = base
    for part in parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(f"{str(cur)!r} is a symlink; saved directories must hold plain files only")
    resolved = cur.resolve()
    if resolved != base and base not in resolved.parents:
        raise UnsafePathError(f"{name!r} resolves to {str(resolved)!r}, outside {str(base)!r}")
    return cur


def open_confined(root: PathLike, name: str) -> Path:
    """:func:`confined`, and the file must exist and be a regular file."""
    path = confined(root, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"{str(path)!r} is missing", str(path)) from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(f"{str(path)!r} is not a regular file")
    return path


def read_json(path: PathLike, *, max_bytes: int = _JSON_MAX_BYTES, max_depth: int = _JSON_MAX_DEPTH,
              what: str = "file") -> Any:
    """Parse a JSON file of at most ``max_bytes`` bytes nested at most ``max_depth`` levels deep.

    Raises ValueError naming the file (too big, not UTF-8, not JSON, too deep).
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{what} {str(path)!r} has {size} bytes, more than the {max_bytes} allowed")
    raw = path.read_bytes()
    # count brackets before parsing: json's C parser recurses once per level
    depth = 0
    worst = 0
    in_str = esc = False
    for ch in raw:
        if in_str:
            if esc:
                esc = False
            elif ch == 0x5C:
                esc = True
            elif ch == 0x22:
                in_str = False
        elif ch == 0x22:
            in_str = True
        elif ch in (0x5B, 0x7B):
            depth += 1
            if depth > worst:
                worst = depth
                if worst > max_depth:
                    raise ValueError(f"{what} {str(path)!r} is nested more than {max_depth} levels deep")
        elif ch in (0x5D, 0x7D):
            depth -= 1
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {str(path)!r} is not UTF-8 text: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON (truncated or edited?): {exc}") from exc


def remove_stale_tmp(directory: PathLike) -> int:
    """Remove the temporary files a killed :func:`atomic_write` left in ``directory``; return how many.

    Call it only while holding the directory's :class:`DirectoryLock` (a live
    writer's temporary file would be removed too).
    """
    n = 0
    for p in Path(directory).iterdir():
        if p.name.startswith(".") and TMP_MARK in p.name and p.is_file() and not p.is_symlink():
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n


class DirectoryBusyError(RuntimeError):
    """Another process holds the directory's lock (a concurrent job on the same directory)."""


class DirectoryLock:
    """An exclusive, advisory lock on a directory held through ``<dir>/<name>``.

    Uses ``fcntl.flock``, so the kernel releases it when the holder dies: a
    killed job never leaves a stale lock behind. ``acquire`` does not wait: it
    raises :class:`DirectoryBusyError` naming the holder's pid when the
    directory is in use. Usable as a context manager.
    """

    def __init__(self, directory: PathLike, name: str = "lock"):
        self.path = Path(directory) / name
        self._fd: Optional[int] = None

    def acquire(self) -> "DirectoryLock":
        import fcntl

        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise DirectoryBusyError(
                    f"{str(self.path.parent)!r} is in use by another job (process {holder} holds "
                    f"{self.path.name!r}); wait for it to finish or use another directory") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.release()
