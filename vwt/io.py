"""Filesystem helpers: bounded JSON reads, local paths vs hub ids, directories that appear whole or not at all.

An output directory ``out`` is written by :func:`atomic_directory`: the content goes to a hidden
``.<name>.tmp-*`` sibling, and is renamed onto ``out`` only when complete. Writers of the same ``out``
exclude each other with a lock file ``.<name>.lock`` beside it (``flock``, released by the kernel if the
process dies), so of two concurrent writers exactly one commits and the other fails with a clear error.
Anything a killed writer leaves behind (a ``.tmp-*`` directory, or the previous ``out`` parked in
``.<name>.old-*`` between the two renames of an overwrite) is cleaned up or restored by the next writer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: exclusive creation of the lock file instead
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MAX_JSON_BYTES",
    "BadFileError",
    "OutputBusyError",
    "DirectoryContents",
    "read_json",
    "check_regular_file",
    "is_local_path",
    "check_local_path",
    "check_output",
    "atomic_directory",
]

logger = logging.getLogger(__name__)

MAX_JSON_BYTES = 4 * 2**20
"""The largest JSON file read. Config files are a few kB; 4 MiB is far above any real one and far below
anything that hurts to read."""
_HUB_ID = re.compile(r"^(?:[\w\-.]{1,96}/)?[\w\-.]{1,96}$")


class BadFileError(ValueError):
    """A file that is not a regular file, too large, not UTF-8 or not valid JSON; the message names it."""


class OutputBusyError(OSError):
    """Another process is writing the same output directory right now."""


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "directory", stat.S_ISCHR: "character device", stat.S_ISBLK: "block device",
             stat.S_ISFIFO: "named pipe", stat.S_ISSOCK: "socket"}
    return next((name for test, name in kinds.items() if test(mode)), "special file")


def check_regular_file(path: str | os.PathLike) -> None:
    """Raise :class:`BadFileError` (a ``ValueError``) naming ``path`` unless it is a regular file (or a
    symlink to one): a device, pipe or directory is never opened for reading."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise BadFileError(f"{path}: is a {_file_kind(mode)}, not a regular file; refusing to read it")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: str | os.PathLike, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file, reading at most ``max_bytes``; only regular files (symlinks to them included).

    Raises:
        BadFileError: naming ``path``, for a missing or special file (device, pipe, directory), a file
            over ``max_bytes``, text that is not UTF-8, invalid or too deeply nested JSON, or NaN/Infinity.
    """
    path = Path(path)
    try:  # O_NONBLOCK: opening a named pipe must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise BadFileError(f"{path}: cannot open ({err.strerror})") from err
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise BadFileError(f"{path}: is a {_file_kind(info.st_mode)}, not a regular file; refusing to read it")
    with os.fdopen(fd, "rb") as fh:
        size = info.st_size
        if size > max_bytes:
            raise BadFileError(f"{path}: {size} bytes, over the {max_bytes}-byte limit of a JSON config")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while we read
        raise BadFileError(f"{path}: over the {max_bytes}-byte limit of a JSON config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadFileError(f"{path}: not UTF-8 text (invalid byte at offset {err.start}); is it a binary file?") from err
    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as err:
        raise BadFileError(f"{path}: not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from err
    except ValueError as err:  # NaN / Infinity
        raise BadFileError(f"{path}: not valid JSON: {err}") from err
    except RecursionError:
        raise BadFileError(f"{path}: JSON nested too deeply to be a config") from None


def is_local_path(name: str | os.PathLike) -> bool:
    """Whether ``name`` is meant as a local path rather than a hub id ``name`` or ``owner/name``.

    Local: anything that exists, an absolute path, one starting with ``.`` or ``~``, one with more than
    one separator or a backslash, one that is no valid hub id, and ``owner/name`` where ``owner`` is a
    local directory (``vocabularies/nope``: a mistyped folder, not a hub repo).
    """
    text = os.fspath(name)
    if not text or os.path.exists(text) or os.path.isabs(text) or text.startswith((".", "~")):
        return True
    if "\\" in text or text.count("/") > 1 or not _HUB_ID.match(text):
        return True
    return "/" in text and os.path.isdir(text.split("/", 1)[0])


def check_local_path(name: str | os.PathLike, what: str = "directory") -> None:
    """Raise :class:`FileNotFoundError` for a local-looking ``name`` that is no directory, so that a mistyped
    path never goes to the hub (retries, then a misleading "check your connection")."""
    text = os.fspath(name)
    if os.path.isdir(text) or not is_local_path(text):
        return
    if os.path.exists(text):
        raise FileNotFoundError(f"{text} is a file, not a {what}")
    hint = ""
    if "/" in text and os.path.isdir(text.split("/", 1)[0]) and not text.startswith((".", "/", "~")):
        hint = f"; {text.split('/', 1)[0]}/ is a local directory, so this is taken as a local path"
    raise FileNotFoundError(f"no such {what}: {text} (not looked up on the hub{hint})")


@dataclass(frozen=True)
class DirectoryContents:
    """What a directory must hold for ``overwrite`` to replace it: all of ``required``, nothing outside
    ``required | optional``. An empty directory may always be replaced."""

    what: str
    required: frozenset[str]
    optional: frozenset[str] = frozenset()

    def problem(self, directory: Path) -> str | None:
        names = {p.name for p in directory.iterdir()}
        if not names:
            return None
        missing = sorted(self.required - names)
        foreign = sorted(names - self.required - self.optional)
        if not missing and not foreign:
            return None
        parts = [f"it lacks {', '.join(missing)}"] if missing else []
        parts += [f"it holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}"] if foreign else []
        return f"{directory} is not {self.what} ({'; '.join(parts)})"


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold the lock file ``.<name>.lock`` beside ``out``; raise :class:`OutputBusyError` if another holds it."""
    lock = out.parent / f".{out.name}.lock"
    busy = OutputBusyError(f"{out} is being written by another process (it holds {lock}); "
                           "wait for it to finish or choose another output directory")
    while True:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | (0 if fcntl else os.O_EXCL)
        try:
            fd = os.open(lock, flags, 0o666)
        except FileExistsError:  # pragma: no cover - no fcntl
            raise busy from None
        except OSError as err:
            raise type(err)(err.errno, f"cannot write beside {out}: {err.strerror} (creating {lock})") from None
        if fcntl is None:  # pragma: no cover
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise busy from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)  # the previous holder removed the file between our open and flock: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def _leftovers(out: Path, kind: str) -> list[Path]:
    """``.<name>.<kind>-XXXXXXXX`` siblings of ``out`` made by :func:`tempfile.mkdtemp` (newest first)."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.{kind}-[a-z0-9_]{{8}}")
    found = [p for p in out.parent.iterdir() if pattern.fullmatch(p.name)] if out.parent.is_dir() else []
    return sorted(found, key=lambda p: p.lstat().st_mtime, reverse=True)


def _recover(out: Path) -> None:
    """Under the lock: restore ``out`` parked by an overwrite that died between its two renames; remove
    the temporary directories of writers that died (no live writer can own them: it would hold the lock)."""
    for old in _leftovers(out, "old"):
        parked = old / out.name
        if not os.path.lexists(out) and os.path.lexists(parked):
            os.replace(parked, out)
            logger.warning("restored %s from %s, left by an interrupted overwrite", out, old)
        shutil.rmtree(old, ignore_errors=True)
    for tmp in _leftovers(out, "tmp"):
        logger.warning("removing %s, left by an interrupted write of %s", tmp, out)
        shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(out: Path, overwrite: bool, contents: DirectoryContents | None) -> None:
    if not os.path.lexists(out):
        return
    if not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; overwrite replaces only a directory")
    problem = contents.problem(out) if contents is not None else None
    if problem:
        raise FileExistsError(f"{problem}: overwrite replaces only {contents.what} or an empty directory; "
                              "move its files away or choose another output directory")


def check_output(out: str | os.PathLike, *, overwrite: bool = False, contents: DirectoryContents | None = None) -> None:
    """Fail early, before any work, where :func:`atomic_directory` would refuse ``out`` (recovering what an
    interrupted writer left first). The same checks run again when writing."""
    out = Path(out)
    if not out.parent.is_dir():
        if os.path.lexists(out.parent):
            raise NotADirectoryError(f"{out.parent} is not a directory, so {out} cannot be created in it")
        return  # created when writing
    with _locked(out):
        _recover(out)
        _check_replaceable(out, overwrite, contents)


def _default_permissions(root: Path) -> None:
    """Give a tree the permissions a plain mkdir/open would (mkdtemp and some writers use 0700/0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike, *, overwrite: bool = False,
                     contents: DirectoryContents | None = None) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; on success rename it to ``out``.

    If the body raises, the temporary directory is removed and ``out`` is untouched. An existing
    ``out`` raises :class:`FileExistsError` unless ``overwrite``, and with ``overwrite`` unless it is
    empty or holds exactly ``contents``; it is replaced only after the new content is complete.
    Another writer of the same ``out`` raises :class:`OutputBusyError`.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        _recover(out)
        _check_replaceable(out, overwrite, contents)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            yield tmp
            _default_permissions(tmp)
            _check_replaceable(out, overwrite, contents)  # again: a writer that ignores the lock
            if os.path.lexists(out):
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.replace(out, old / out.name)
                os.replace(tmp, out)  # a kill between these two renames: the next writer restores `old`
                shutil.rmtree(old, ignore_errors=True)
            else:
                try:
                    os.rename(tmp, out)  # fails on a non-empty `out` created meanwhile: never replaces content
                except OSError as err:
                    raise FileExistsError(f"{out} appeared while it was being written: {err.strerror}") from err
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
