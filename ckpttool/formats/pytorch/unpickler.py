"""The allowlisting unpickler: a PyTorch pickle read without running anything it brings.

`pickle` resolves every global a pickle names (GLOBAL, STACK_GLOBAL, the copyreg extension codes)
through `find_class`, and every storage (BINPERSID) through `persistent_load`. Both are overridden:
`find_class` answers only the globals `torch.load(weights_only=True)` accepts (its
torch/_weights_only_unpickler.py: the tensor rebuild functions, the storage types, the dtypes,
OrderedDict, torch.Size ...), each with a small object or function of ours that records what the
pickle says (storage key, dtype, offset, shape, stride); any other global refuses the whole file
(UnsafeFile, naming the global) before it is looked up anywhere. So the only code a pickle can call
is in this module, and none of it imports torch, opens files or evaluates text.

Globals weights_only accepts but ckpttool does not read (quantized, sparse, meta and subclass
tensors) resolve to functions that refuse the file as unsupported when called.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from types import FunctionType

from ckpttool.errors import CorruptCheckpoint, Truncated, UnsafeFile, Unsupported
from ckpttool.formats.dtypes import DType, dtype_from_name
from ckpttool.text import excerpt

# torch dtype name -> TensorFlow dtype name (only exact equivalents).
TORCH_DTYPES = {
    "float32": "float32", "float": "float32", "float64": "float64", "double": "float64",
    "float16": "float16", "half": "float16", "bfloat16": "bfloat16", "complex64": "complex64",
    "cfloat": "complex64", "complex128": "complex128", "cdouble": "complex128", "bool": "bool",
    "uint8": "uint8", "int8": "int8", "int16": "int16", "short": "int16", "int32": "int32", "int": "int32",
    "int64": "int64", "long": "int64", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "float8_e5m2": "float8_e5m2", "float8_e4m3fn": "float8_e4m3fn", "float8_e5m2fnuz": "float8_e5m2fnuz",
    "float8_e4m3fnuz": "float8_e4m3fnuz",
}
# dtypes torch pickles that have no TensorFlow equivalent here: named, then refused if a tensor has one.
_UNREAD_DTYPES = ("qint8", "quint8", "qint32", "quint4x2", "quint2x4", "complex32", "chalf", "bits8", "bits16",
                  "bits1x8", "bits2x4", "bits4x2", "float8_e8m0fnu", "float4_e2m1fn_x2",
                  *(f"uint{n}" for n in range(1, 8)), *(f"int{n}" for n in range(1, 8)))
# The legacy typed storage classes (torch.FloatStorage ...) and the dtype of their elements.
_STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "QInt8Storage": "qint8", "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}
_TENSOR_CLASSES = ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
# Python 2 module names pickle protocol 2 may carry (pickle's fix_imports maps them the same way).
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
MAX_DEPTH = 100  # containers nested deeper than this are refused (no state dict comes near)


class _Sealed:
    """What a pickle's BUILD may not change: pickle calls `__setstate__` when there is one (else it
    writes the object's __dict__, frozen dataclass or not), so each of ours refuses it."""

    __slots__ = ()

    def __setstate__(self, state) -> None:
        raise CorruptCheckpoint("the pickle sets the state of a torch global (BUILD), which no tensor needs")


class _Call(_Sealed):
    """One of our functions as a pickle may call it (REDUCE); sealed, where a bare function's
    attributes (its defaults) could be rewritten by a BUILD."""

    __slots__ = ("function",)

    def __init__(self, function):
        object.__setattr__(self, "function", function)

    def __call__(self, *args):
        return self.function(*args)


@dataclass(frozen=True)
class TorchDtype(_Sealed):
    """A torch dtype named by the pickle (`torch.float32`): its TensorFlow dtype, if it has one."""

    torch_name: str

    @property
    def dtype(self) -> DType:
        name = TORCH_DTYPES.get(self.torch_name)
        if name is None:
            what = "quantized tensors" if self.torch_name.startswith(("qint", "quint")) else "tensors"
            raise Unsupported(f"{what} of torch.{self.torch_name} are not read (no TensorFlow dtype holds them)")
        return dtype_from_name(name)


@dataclass(frozen=True)
class StorageType(_Sealed):
    """A storage class named by the pickle (torch.FloatStorage, torch.storage.UntypedStorage)."""

    name: str
    element: TorchDtype  # UntypedStorage: bytes (uint8)


@dataclass(frozen=True)
class StorageRef(_Sealed):
    """One storage as a persistent id declares it: where its bytes are (`key`) and how many."""

    key: str
    element: TorchDtype
    numel: int  # elements of `element`, as declared

    @property
    def nbytes(self) -> int:
        return self.numel * self.element.dtype.itemsize


@dataclass(frozen=True)
class TensorRef(_Sealed):
    """A tensor as a rebuild function describes it: a strided view of a storage."""

    storage: StorageRef
    dtype: TorchDtype
    offset: int  # in elements of `dtype`
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class PickledDict(dict):
    """collections.OrderedDict / Counter as a plain dict; the attributes BUILD sets (a state dict's
    `_metadata`) are kept aside, never set on anything."""

    def __setstate__(self, state) -> None:
        self.pickled_state = state


class Size(tuple):
    """torch.Size: a tuple."""

    __setstate__ = _Sealed.__setstate__


class _Marker(_Sealed):
    """A class the pickle names only to pass it around (torch.Tensor as _rebuild_from_type_v2's type)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)


class _Parameter:
    """torch.nn.Parameter created through NEWOBJ: the tensor it wraps."""

    def __new__(cls, data=None, requires_grad=True):
        return data

    __setstate__ = _Sealed.__setstate__


def _ints(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int and v >= 0 for v in value):
        raise CorruptCheckpoint(f"a tensor's {what} is not a tuple of non-negative integers")
    return tuple(value)


def _tensor(storage, storage_offset, size, stride, dtype: TorchDtype | None = None) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise CorruptCheckpoint("a tensor is rebuilt from something that is not a storage")
    if type(storage_offset) is not int or storage_offset < 0:
        raise CorruptCheckpoint("a tensor's storage offset is not a non-negative integer")
    shape, strides = _ints(tuple(size), "shape"), _ints(tuple(stride), "stride")
    if len(shape) != len(strides):
        raise CorruptCheckpoint(f"a tensor has shape {list(shape)} but strides {list(strides)}")
    if dtype is not None and not isinstance(dtype, TorchDtype):
        raise CorruptCheckpoint("a tensor's dtype is not a torch dtype")
    return TensorRef(storage, dtype or storage.element, storage_offset, shape, strides)


def rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor(storage, storage_offset, size, stride)


def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                      metadata=None):
    return _tensor(storage, storage_offset, size, stride)


def rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    return _tensor(storage, storage_offset, size, stride, dtype)


def rebuild_parameter(data, requires_grad=True, backward_hooks=None):
    return data


def rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data


_TENSOR_REBUILDERS = (rebuild_tensor, rebuild_tensor_v2, rebuild_tensor_v3, rebuild_parameter,
                      rebuild_parameter_with_state)


def rebuild_from_type_v2(func, new_type, args, state):
    """A tensor (or subclass) pickled with its type: rebuilt by one of our rebuild functions only."""
    if not isinstance(func, _Call) or func.function not in _TENSOR_REBUILDERS or not isinstance(args, tuple):
        raise CorruptCheckpoint("_rebuild_from_type_v2 names no tensor rebuild function")
    if not (isinstance(new_type, _Marker) or new_type is _Parameter):
        raise CorruptCheckpoint("_rebuild_from_type_v2 names no tensor class")
    return func(*args)


def _unread(what: str):
    def refuse(*_args, **_kwargs):
        raise Unsupported(f"the file holds {what}, which ckpttool does not read",
                          hint="torch.load it and save a state dict of dense CPU tensors")

    return refuse


def _encode(text, encoding="latin1"):
    """_codecs.encode, as protocol 2 pickles bytes: latin-1 text only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CorruptCheckpoint("_codecs.encode is allowed for latin-1 text only")
    return text.encode("latin-1")


def _set(items=()):
    return set(items)


def _bytearray(*args):
    if args and not isinstance(args[0], (bytes, str)):
        raise CorruptCheckpoint("bytearray is allowed from bytes only")
    return bytearray(*args)


def _complex(real=0.0, imag=0.0):
    if not isinstance(real, (int, float)) or not isinstance(imag, (int, float)):
        raise CorruptCheckpoint("complex is allowed from numbers only")
    return complex(real, imag)


def _device(*_args):
    return "cpu"


def _allowed_globals() -> dict[str, object]:
    """Every global torch.load(weights_only=True) resolves, mapped to ours."""
    allowed: dict[str, object] = {
        "collections.OrderedDict": PickledDict, "collections.Counter": PickledDict,
        "torch.Size": Size, "torch.device": _device, "torch.nn.parameter.Parameter": _Parameter,
        "torch.Tensor": _Marker("torch.Tensor"), "_codecs.encode": _encode, "builtins.set": _set,
        "builtins.bytearray": _bytearray, "builtins.complex": _complex,
        "torch._utils._rebuild_tensor": rebuild_tensor, "torch._utils._rebuild_tensor_v2": rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": rebuild_parameter_with_state,
        "torch._tensor._rebuild_from_type_v2": rebuild_from_type_v2,
        "torch._utils._rebuild_qtensor": _unread("quantized tensors"),
        "torch._utils._rebuild_sparse_tensor": _unread("sparse tensors"),
        "torch._utils._rebuild_meta_tensor_no_storage": _unread("meta tensors (no data)"),
        "torch._utils._rebuild_wrapper_subclass": _unread("tensor subclasses"),
        "torch._utils._rebuild_device_tensor_from_numpy": _unread("device tensors"),
        "torch._utils._rebuild_device_tensor_from_cpu_tensor": _unread("device tensors"),
        "torch.serialization._get_layout": _unread("sparse tensors"),
    }
    for name in (*TORCH_DTYPES, *_UNREAD_DTYPES):
        allowed[f"torch.{name}"] = TorchDtype(name)
    for scheme in ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric",
                   "per_channel_affine_float_qparams"):
        allowed[f"torch.{scheme}"] = _unread("quantized tensors")
    for module in ("torch", "torch.cuda"):
        for name, element in _STORAGE_DTYPES.items():
            allowed[f"{module}.{name}"] = StorageType(name, TorchDtype(element))
        for kind in _TENSOR_CLASSES:
            allowed[f"{module}.{kind}Tensor"] = _Marker(f"{module}.{kind}Tensor")
    for module in ("torch", "torch.storage"):
        allowed[f"{module}.UntypedStorage"] = StorageType("UntypedStorage", TorchDtype("uint8"))
        allowed[f"{module}.TypedStorage"] = StorageType("TypedStorage", TorchDtype("uint8"))
    return {name: _Call(value) if isinstance(value, FunctionType) else value for name, value in allowed.items()}


ALLOWED_GLOBALS = _allowed_globals()


class AllowlistUnpickler(pickle.Unpickler):
    """Unpickles one PyTorch pickle; `what` names the file in messages. Storages the pickle
    declares are collected in `storages` (key -> StorageRef), one per key."""

    def __init__(self, data: io.BytesIO, what: str, legacy: bool = False):
        super().__init__(data, encoding="utf-8")
        self.what = what
        self.legacy = legacy
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module, name):
        shown = f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else repr((module, name))
        looked_up = f"{_PY2_MODULES.get(module, module)}.{name}" if isinstance(module, str) else None
        found = ALLOWED_GLOBALS.get(looked_up) if looked_up else None
        if found is None:
            raise UnsafeFile(f"{self.what}: refusing to unpickle the global {excerpt(shown, 100)}, which "
                             "torch.load(weights_only=True) does not allow either; nothing of the file was run",
                             hint="only state dicts of tensors are read; if you trust the file, load it with torch "
                                  "and save it with torch.save(model.state_dict()) or as .safetensors")
        return found

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise CorruptCheckpoint(f"{self.what}: a persistent id that is not a storage")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, StorageType) or not isinstance(key, str) or type(numel) is not int \
                or numel < 0:
            raise CorruptCheckpoint(f"{self.what}: a storage id that is not (type, key, location, size)")
        if len(pid) == 6 and pid[5] is not None:
            raise Unsupported(f"{self.what}: a storage view (saved by torch before 0.4) is not read")
        ref = StorageRef(key, storage_type.element, numel)
        known = self.storages.setdefault(key, ref)
        if known.nbytes != ref.nbytes:
            raise CorruptCheckpoint(f"{self.what}: storage {excerpt(key, 40)!r} is declared with two sizes")
        return known


def unpickle(data: bytes | io.BytesIO, what: str) -> tuple[object, dict[str, StorageRef]]:
    """The object a pickle holds (tensors as TensorRef) and the storages it declares. A truncated
    or malformed pickle is a CorruptCheckpoint; a global outside the allowlist an UnsafeFile."""
    stream = data if isinstance(data, io.BytesIO) else io.BytesIO(data)
    unpickler = AllowlistUnpickler(stream, what)
    try:
        return unpickler.load(), unpickler.storages
    except UnsafeFile:
        raise
    except (Unsupported, CorruptCheckpoint) as exc:  # from our rebuild functions: name the file
        if exc.message.startswith(what):
            raise
        raise type(exc)(f"{what}: {exc.message}", exc.hint) from None
    except MemoryError:
        raise CorruptCheckpoint(f"{what}: its pickle declares more memory than there is (a pickle bomb?)") from None
    except RecursionError:
        raise CorruptCheckpoint(f"{what}: its pickle nests too deep") from None
    except EOFError:
        raise Truncated(f"{what}: its pickle is cut short") from None
    except pickle.UnpicklingError as exc:
        if "truncated" in str(exc):
            raise Truncated(f"{what}: its pickle is cut short") from None
        raise CorruptCheckpoint(f"{what}: not a readable pickle ({excerpt(str(exc), 160)})") from None
    except Exception as exc:  # pickle's own errors: UnpicklingError, EOFError, TypeError from a bad REDUCE ...
        raise CorruptCheckpoint(f"{what}: not a readable pickle ({type(exc).__name__}: "
                                f"{excerpt(str(exc), 160)})") from None


def named_tensors(obj, what: str) -> dict[str, TensorRef]:
    """Every tensor under `obj`, named by its path of dict keys and list positions joined with `.`
    (`model.fc.weight`, `optimizer.state.0.exp_avg`); a bare tensor is named `tensor`. A tensor
    reached twice (tied weights) gets both names. A container is walked once: one reached again
    (a pickle can reference one list from itself a million times, nesting the references: a bomb
    for any walk that follows them) is skipped when it holds no tensor, refused when it does
    (its tensors would have as many names as paths to them). A file with no tensor is refused."""
    found: dict[str, TensorRef] = {}
    first_path: dict[int, str] = {}
    reached_again: set[str] = set()
    stack: list[tuple[str, object, int]] = [("", obj, 0)]
    while stack:
        name, value, depth = stack.pop()
        if isinstance(value, TensorRef):
            if (name or "tensor") in found:
                raise CorruptCheckpoint(f"{what}: two tensors are named {excerpt(name, 80)!r}")
            found[name or "tensor"] = value
            continue
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        else:
            continue  # numbers, strings, None: not weights
        if id(value) in first_path:
            reached_again.add(first_path[id(value)])
            continue
        first_path[id(value)] = name
        if depth >= MAX_DEPTH:
            raise Unsupported(f"{what}: containers nested more than {MAX_DEPTH} deep (a pickle bomb?)")
        for key, child in reversed(items):  # reversed: the stack pops them in the file's order
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                if isinstance(child, (TensorRef, dict, list, tuple)) and child:
                    raise Unsupported(f"{what}: a container under a {type(key).__name__} key, which names nothing")
                continue
            stack.append((f"{name}.{key}" if name else str(key), child, depth + 1))
    if not found:
        raise Unsupported(f"{what} holds no tensor (a pickle of other objects): nothing to read")
    _refuse_shared_containers(found, reached_again, what)
    return found


def _refuse_shared_containers(found: dict[str, TensorRef], reached_again: set[str], what: str) -> None:
    if not reached_again:
        return
    scopes = {""}
    for name in found:
        parts = name.split(".")
        scopes.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    shared = sorted(path for path in reached_again if path in scopes)
    if shared:
        raise Unsupported(f"{what}: the container at {excerpt(shared[0] or '(top)', 80)!r} holding tensors is "
                          "referenced more than once (a pickle bomb?); refusing to name its tensors twice")
