"""One tensor from a ``torch.save`` archive, read without unpickling anything.

A ``torch.save`` file is a zip archive: ``<name>/data.pkl`` (a pickle that describes the object) and
``<name>/data/<key>`` (the raw bytes of each storage). Instead of ``torch.load`` (an unpickler, even with
``weights_only=True``), :func:`read_header` walks the pickle's opcodes with :func:`pickletools.genops`, which
only parses them, and interprets the few that describe tensors, lists and dicts. Any other callable than
``torch._utils._rebuild_tensor_v2`` and ``collections.OrderedDict``, or any other opcode, is refused, so
nothing in the file is ever imported or run. :func:`read_tensor` then reads the storage's bytes, after the
caller has checked the header (a few bytes can describe an expanded view of terabytes).
"""

from __future__ import annotations

import os
import pickletools
import sys
import zipfile
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["SavedTensor", "TorchSaveError", "read_header", "read_tensor"]

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_REBUILD = ("torch._utils", "_rebuild_tensor_v2")
_ORDERED_DICT = ("collections", "OrderedDict")
_MAX_PICKLE_BYTES = 1 << 20  # a tensor's description is a few hundred bytes
_MARK = object()


class TorchSaveError(ValueError):
    """A file that is not a ``torch.save`` archive this reader accepts."""


@dataclass(frozen=True)
class SavedTensor:
    """A tensor as ``data.pkl`` describes it: a strided view of storage ``key`` (nothing read yet)."""

    # Element type of the storage.
    dtype: torch.dtype
    # The storage's name inside the archive (``<name>/data/<key>``).
    key: str
    # Elements in the storage.
    storage_numel: int
    # First element of the view, in elements.
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Elements in the view (what materialising it makes)."""
        n = 1
        for s in self.shape:
            n *= s
        return n


def _pickle_name(archive: zipfile.ZipFile) -> str:
    names = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(names) != 1:
        raise TorchSaveError("not a torch.save archive (no single <name>/data.pkl)")
    if archive.getinfo(names[0]).file_size > _MAX_PICKLE_BYTES:
        raise TorchSaveError(f"its data.pkl is over {_MAX_PICKLE_BYTES:,} bytes: more than one tensor's description")
    return names[0]


def _global(module: str, name: str) -> tuple[str, str]:
    if (module, name) in (_REBUILD, _ORDERED_DICT) or (module == "torch" and name in _STORAGE_DTYPES):
        return module, name
    raise TorchSaveError(f"it names {module}.{name}, which is not a tensor storage; nothing of it was run")


def _persistent(pid: Any) -> tuple[torch.dtype, str, int]:
    if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage" or not isinstance(pid[1], tuple)
            or not isinstance(pid[2], str) or not isinstance(pid[4], int) or pid[4] < 0):
        raise TorchSaveError(f"unexpected storage reference {pid!r}")
    return _STORAGE_DTYPES[pid[1][1]], pid[2], pid[4]


def _reduce(func: Any, args: Any) -> Any:
    if func == _ORDERED_DICT and args == ():
        return {}
    if func == _REBUILD and isinstance(args, tuple) and len(args) in (6, 7):
        (dtype, key, numel), offset, shape, stride = args[:4]
        if not (isinstance(offset, int) and all(isinstance(v, int) for v in (*shape, *stride))):
            raise TorchSaveError("a tensor with a non-integer offset, shape or stride")
        return SavedTensor(dtype, key, numel, offset, tuple(shape), tuple(stride))
    raise TorchSaveError(f"unexpected call {func!r}{args!r}")


def _pop_mark(stack: list[Any]) -> list[Any]:
    i = len(stack) - 1 - stack[::-1].index(_MARK)
    items = stack[i + 1:]
    del stack[i:]
    return items


def _interpret(data: bytes) -> Any:
    """The object a tensor pickle builds, with tensors as :class:`SavedTensor` (opcodes parsed, never run)."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "GLOBAL":
            stack.append(_global(*arg.split(" ", 1)))
        elif name == "STACK_GLOBAL":
            qualname, module = stack.pop(), stack.pop()
            stack.append(_global(module, qualname))
        elif name in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "BININT", "BININT1", "BININT2",
                      "LONG1", "NONE", "NEWTRUE", "NEWFALSE", "BINFLOAT"):
            stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}.get(name, arg))
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "TUPLE":
            stack.append(tuple(_pop_mark(stack)))
        elif name in ("EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
            n = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}[name]
            items = tuple(stack[len(stack) - n:])
            del stack[len(stack) - n:]
            stack.append(items)
        elif name in ("EMPTY_DICT", "EMPTY_LIST"):
            stack.append({} if name == "EMPTY_DICT" else [])
        elif name in ("SETITEM", "SETITEMS"):
            items = [stack.pop(-2), stack.pop()] if name == "SETITEM" else _pop_mark(stack)
            stack[-1].update(zip(items[::2], items[1::2]))
        elif name in ("APPEND", "APPENDS"):
            items = [stack.pop()] if name == "APPEND" else _pop_mark(stack)
            stack[-1].extend(items)
        elif name in ("BINPUT", "LONG_BINPUT", "MEMOIZE"):
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif name == "BINPERSID":
            stack.append(_persistent(stack.pop()))
        elif name == "REDUCE":
            args = stack.pop()
            stack.append(_reduce(stack.pop(), args))
        elif name == "STOP":
            return stack.pop()
        else:
            raise TorchSaveError(f"unsupported pickle opcode {name}")
    raise TorchSaveError("the pickle has no STOP")


def read_header(path: str | os.PathLike) -> Any:
    """What a ``torch.save`` file holds, with each tensor as a :class:`SavedTensor` (no storage is read).

    Raises:
        TorchSaveError: not a zip archive of ``torch.save``, or a pickle that does anything but describe
            tensors, lists and dicts.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read(_pickle_name(archive))
        return _interpret(data)
    except TorchSaveError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, IndexError, KeyError, TypeError, AttributeError) as err:
        raise TorchSaveError(f"not a readable torch.save archive ({type(err).__name__}: {err})") from err


def read_tensor(path: str | os.PathLike, spec: SavedTensor) -> torch.Tensor:
    """The tensor ``spec`` describes, read from its storage in ``path`` (a copy, contiguous).

    Check ``spec.numel`` before calling: this materialises it.
    """
    itemsize = torch.empty((), dtype=spec.dtype).element_size()
    last = spec.offset + sum((s - 1) * st for s, st in zip(spec.shape, spec.stride) if s > 0)
    if spec.offset < 0 or any(st < 0 for st in spec.stride) or (spec.numel and last >= spec.storage_numel):
        raise TorchSaveError(f"the view {spec.shape} (stride {spec.stride}, offset {spec.offset}) reaches past "
                             f"its storage of {spec.storage_numel} elements")
    with zipfile.ZipFile(path) as archive:
        prefix = _pickle_name(archive).split("/", 1)[0]
        names = set(archive.namelist())
        order = archive.read(f"{prefix}/byteorder").decode() if f"{prefix}/byteorder" in names else "little"
        member = f"{prefix}/data/{spec.key}"
        if member not in names or archive.getinfo(member).file_size != spec.storage_numel * itemsize:
            raise TorchSaveError(f"storage {spec.key!r} is missing or not {spec.storage_numel * itemsize:,} bytes")
        raw = bytearray(archive.read(member))
    storage = torch.frombuffer(raw, dtype=spec.dtype) if raw else torch.empty(0, dtype=spec.dtype)
    if order != sys.byteorder:
        storage = storage.view(torch.uint8).view(-1, itemsize).flip(1).reshape(-1).view(spec.dtype)
    return storage.as_strided(spec.shape, spec.stride, spec.offset).contiguous()
