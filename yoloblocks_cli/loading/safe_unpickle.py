"""Read a ``torch.save`` file without running anything it carries.

Why not ``torch.load``: ultralytics, YOLOv5 and YOLOv9 checkpoints pickle whole model objects,
so ``weights_only=False`` would import and call whatever globals the file names (a
``__reduce__`` to ``os.system`` runs at load time), and ``weights_only=True`` refuses the
model classes, which are exactly what a checkpoint is made of.

The unpickler here decides every global the file names (``find_class``) against a fixed table:

- tensor and storage rebuilding (``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``,
  ``torch.FloatStorage`` and its kin, dtypes) map to our own functions, which read the raw
  bytes from the zip archive with bounds checked (a storage must be exactly as long as its
  declared element count; a view must lie inside its storage);
- plain containers and values (``collections.OrderedDict``, ``set``, ``frozenset``,
  ``_codecs.encode`` for protocol-2 bytes, ``pathlib`` paths as text);
- classes of the model libraries (``ultralytics.*``, the repositories' ``models.*`` and
  ``utils.*``, ``torch.nn.modules.*``, ``numpy``, ``types.SimpleNamespace``, ``argparse.Namespace``)
  become inert :class:`Record` objects: a record keeps the class name, the arguments and the
  state the pickle gives it, and has no behaviour of its own. Nothing of the named class is
  imported, constructed or called.

Anything else (``os.system``, ``posix.system``, ``builtins.eval``, ``subprocess.Popen``,
``torch.load``, a function of a model library) raises :class:`UnsafeGlobal` naming it, before
it could be called. The only callables the pickle machine can reach are the ones above, and
its BUILD opcode (which would call an object's own ``__setstate__``) acts on records only.
The Python implementation of the unpickler is used so that BUILD can be replaced; a checkpoint's
``data.pkl`` is small (the tensors' bytes are separate entries), so its speed does not matter.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from yoloblocks_cli.errors import UsageError

# A ``Record`` stands in for these packages' classes (a class name starts with an upper-case letter).
RECORD_PACKAGES = ("ultralytics.", "models.", "utils.", "torch.nn.modules.", "numpy.", "numpy")
RECORD_GLOBALS = frozenset({"types.SimpleNamespace", "argparse.Namespace", "torch.nn.parameter.Parameter",
                            "numpy.dtype", "numpy.ndarray"})

STORAGE_DTYPES = {  # torch.<Name>Storage -> torch dtype name
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "UntypedStorage": "uint8",
}
DTYPE_NAMES = frozenset({"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
                         "bool", "float", "double", "half", "long", "int", "short"})
MAX_ENTRIES = 100_000  # storages in one archive: a bound before work


class UnsafeGlobal(UsageError):
    """The file names a global outside the allow-list: nothing was called."""

    def __init__(self, name: str, where: str):
        super().__init__(f"{where}: refused to load: the pickle asks for '{name}', which is not a tensor, a plain "
                         "container or a model class (nothing in the file was run)")
        self.name = name


class Record:
    """An inert stand-in for an object of a class the file names: its arguments and state, nothing else."""

    _yb_global = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self.__dict__["_yb_args"] = args
        self.__dict__["_yb_kwargs"] = kwargs

    def __new__(cls, *args: Any, **kwargs: Any) -> "Record":
        obj = object.__new__(cls)
        obj.__dict__.update(_yb_args=args, _yb_kwargs=kwargs, _yb_state=None, _yb_items=[])
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict, slots)
            state = {**(state[0] or {}), **state[1]}
        self.__dict__["_yb_state"] = state

    # list/dict subclasses are pickled with APPENDS / SETITEMS on the object itself
    def append(self, item: Any) -> None:
        self.__dict__["_yb_items"].append(item)

    def extend(self, items: Any) -> None:
        self.__dict__["_yb_items"].extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__["_yb_items"].append((key, value))

    @property
    def state(self) -> dict:
        s = self.__dict__.get("_yb_state")
        if isinstance(s, dict):
            return s
        kw = self.__dict__.get("_yb_kwargs") or {}
        return dict(kw) if isinstance(kw, dict) else {}

    @property
    def global_name(self) -> str:
        return type(self)._yb_global

    @property
    def class_name(self) -> str:
        return type(self)._yb_global.rsplit(".", 1)[-1]

    def __repr__(self) -> str:
        return f"<record {type(self)._yb_global}>"


_RECORD_CLASSES: dict[str, type] = {}


def record_class(module: str, name: str) -> type:
    key = f"{module}.{name}"
    cls = _RECORD_CLASSES.get(key)
    if cls is None:
        cls = type(name, (Record,), {"_yb_global": key, "__module__": "yoloblocks_cli.loading.safe_unpickle.records"})
        _RECORD_CLASSES[key] = cls
    return cls


def is_record_global(module: str, name: str) -> bool:
    key = f"{module}.{name}"
    if key in RECORD_GLOBALS:
        return True
    if not name[:1].isupper() or not name.replace("_", "").isalnum():
        return False  # functions (lower-case) and odd names are never records
    return module.startswith(RECORD_PACKAGES) or module in RECORD_PACKAGES


# --- what the pickle may call: our own functions -------------------------------------------------


@dataclass(frozen=True)
class StorageType:
    """``torch.HalfStorage`` as the file names it: only its dtype is used."""

    dtype: str


def _torch() -> Any:
    import torch

    return torch


def _check_view(numel: int, offset: int, size: tuple, stride: tuple) -> None:
    if not all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride)) or len(size) != len(stride):
        raise ValueError(f"malformed tensor view: offset {offset}, size {size}, stride {stride}")
    if 0 in size:
        return
    last = offset + sum((s - 1) * st for s, st in zip(size, stride))
    if last >= numel:
        raise ValueError(f"tensor view reaches element {last} of a storage of {numel}")


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> Any:
    size, stride = tuple(size), tuple(stride)
    _check_view(int(storage.numel()), storage_offset, size, stride)
    return storage.as_strided(size, stride, storage_offset)


def _rebuild_parameter(data: Any, requires_grad: Any = True, backward_hooks: Any = None, *state: Any) -> Any:
    return data


def _ordered_dict(*args: Any) -> OrderedDict:
    if args and not isinstance(args[0], (list, tuple)):
        raise ValueError("OrderedDict from a non-list")
    return OrderedDict(*args)


def _codecs_encode(text: Any, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError("_codecs.encode is allowed for protocol-2 bytes only")
    return text.encode("latin1")


def _path(*parts: Any) -> str:
    return "/".join(str(p) for p in parts).replace("//", "/")


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    """``copyreg._reconstructor``: protocol 0/1's way to make an object; only records may be made."""
    if isinstance(cls, type) and issubclass(cls, Record):
        return cls.__new__(cls)
    raise ValueError(f"copyreg._reconstructor of {cls!r}")


def _plain(kind: type) -> Callable:
    def make(*args: Any) -> Any:
        if len(args) > 1:
            raise ValueError(f"{kind.__name__} takes one iterable")
        return kind(*args)
    return make


NUMPY_SCALARS = {"f8": "<d", "f4": "<f", "i8": "<q", "i4": "<i", "i2": "<h", "u1": "<B", "b1": "?"}


def _numpy_scalar(dtype: Any, data: Any = b"") -> Any:
    """``numpy.core.multiarray.scalar(dtype, bytes)`` -> a Python number for the common dtypes; a record otherwise."""
    import struct

    code = dtype._yb_args[0] if isinstance(dtype, Record) and dtype._yb_args else None
    fmt = NUMPY_SCALARS.get(code) if isinstance(code, str) else None
    if fmt is not None and isinstance(data, bytes) and len(data) == struct.calcsize(fmt):
        return struct.unpack(fmt, data)[0]
    return record_class("numpy", "scalar")(dtype)


def _numpy_reconstruct(cls: Any, *args: Any) -> Any:
    """``numpy.core.multiarray._reconstruct(ndarray, shape, dtype)``: an inert array record (state set by BUILD)."""
    return record_class("numpy", "ndarray")()


def _device(*args: Any) -> str:
    return ":".join(str(a) for a in args)


def _allowed() -> dict[str, Any]:
    fixed: dict[str, Any] = {
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "collections.OrderedDict": _ordered_dict,
        "builtins.set": _plain(set),
        "builtins.frozenset": _plain(frozenset), "builtins.tuple": _plain(tuple), "builtins.list": _plain(list),
        "builtins.dict": _plain(dict),
        "_codecs.encode": _codecs_encode,
        "copyreg._reconstructor": _reconstructor,
        "builtins.object": object,
        "torch.device": _device,
        "torch.Size": _plain(tuple),
        "pathlib.PosixPath": _path, "pathlib.WindowsPath": _path, "pathlib.Path": _path,
        "pathlib.PurePosixPath": _path, "pathlib.PureWindowsPath": _path,
    }
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        fixed[f"{core}.scalar"] = _numpy_scalar
        fixed[f"{core}._reconstruct"] = _numpy_reconstruct
    for name, dtype in STORAGE_DTYPES.items():
        fixed[f"torch.{name}"] = StorageType(dtype)
        fixed[f"torch.storage.{name}"] = StorageType(dtype)
    return fixed


_ALLOWED: dict[str, Any] = {}


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Protocol 2 writes Python 2 names (``__builtin__.eval``); report and decide on the Python 3 ones."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _load_build(self: Any) -> None:
    """BUILD (``obj.__setstate__(state)`` or ``obj.__dict__.update(state)``) only on a record, or a dict's
    ``_metadata``: on anything else (a tensor, a dtype) it would call that object's own ``__setstate__``."""
    state = self.stack.pop()
    inst = self.stack[-1]
    if isinstance(inst, Record):
        inst.__setstate__(state)
    elif isinstance(inst, OrderedDict) and isinstance(state, dict) and set(state) <= {"_metadata"}:
        inst._metadata = state.get("_metadata")  # nn.Module.state_dict()'s version table
    else:
        raise pickle.UnpicklingError(f"BUILD on a {type(inst).__name__} is not allowed")


class SafeUnpickler(pickle._Unpickler):  # the Python implementation: BUILD is ours too (see _load_build)
    """``find_class`` answers from the table above; ``persistent_load`` reads storages from the archive;
    BUILD sets state on records only."""

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build

    def __init__(self, file: Any, load_storage: Callable[[Any, str, int], Any], where: str):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage
        self._where = where
        if not _ALLOWED:
            _ALLOWED.update(_allowed())

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - the whole point of this module
        module, name = _python3_name(module, name)
        key = f"{module}.{name}"
        if key in _ALLOWED:
            return _ALLOWED[key]
        if module == "torch" and name in DTYPE_NAMES:
            return getattr(_torch(), name)
        if is_record_global(module, name):
            return record_class(module, name)
        raise UnsafeGlobal(key, self._where)

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise ValueError(f"unknown persistent id {str(pid)[:60]}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, StorageType):
            raise ValueError(f"storage of unknown type {storage_type!r}")
        return self._load_storage(str(key), storage_type.dtype, int(numel))


# --- the archive -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """The unpickled object and what reading it took."""

    obj: Any
    storages: int
    bytes: int


def safe_load(path: str | Path) -> Loaded:
    """Read a ``torch.save`` zip archive through :class:`SafeUnpickler`."""
    torch = _torch()
    where = str(path)
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"no such checkpoint: {where}")
    try:
        zf = zipfile.ZipFile(p)
    except zipfile.BadZipFile:
        head = p.read_bytes()[:2]
        if head[:1] == b"\x80":
            raise UsageError(f"{where}: a bare pickle or a pre-1.6 torch.save file; yb reads torch.save zip "
                             "archives (torch >= 1.6, every ultralytics/YOLOv5/YOLOv9 checkpoint)") from None
        raise UsageError(f"{where}: not a torch checkpoint (not a zip archive: truncated or another format)") from None
    except OSError as exc:
        raise UsageError(f"cannot read {where}: {exc.strerror or exc}") from None
    with zf:
        names = zf.namelist()
        if len(names) > MAX_ENTRIES:
            raise UsageError(f"{where}: {len(names)} entries in the archive (limit {MAX_ENTRIES})")
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise UsageError(f"{where}: not a torch checkpoint (no data.pkl in the archive)")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = zf.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        if byteorder != "little":
            raise UsageError(f"{where}: big-endian checkpoints are not supported")
        size = p.stat().st_size
        seen: dict[str, Any] = {}
        total = [0]

        def load_storage(key: str, dtype_name: str, numel: int) -> Any:
            if key in seen:
                return seen[key]
            dtype = getattr(torch, dtype_name)
            item = torch.empty((), dtype=dtype).element_size()
            name = f"{prefix}data/{key}"
            if name not in names:
                raise ValueError(f"storage {key} is missing from the archive")
            info = zf.getinfo(name)
            if numel < 0 or info.file_size != numel * item or info.file_size > size * 4 + (1 << 20):
                raise ValueError(f"storage {key}: {info.file_size} bytes, but {numel} x {item} declared")
            raw = bytearray(zf.read(name))
            total[0] += len(raw)
            seen[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            return seen[key]

        try:
            data = zf.read(pkl[0])
            obj = SafeUnpickler(io.BytesIO(data), load_storage, where).load()
        except UnsafeGlobal:
            raise
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError,
                AttributeError, IndexError, RuntimeError, OverflowError, MemoryError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise UsageError(f"{where}: damaged checkpoint: {msg}") from None
    return Loaded(obj, len(seen), total[0])
