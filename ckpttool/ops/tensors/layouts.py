"""`--layout torch|tf` and `--transpose`: Keras' tensor layouts to PyTorch's and back.

Keras (TensorFlow) and PyTorch store the same layers' weights in different axis
orders and names:

| layer | Keras | PyTorch |
|---|---|---|
| Dense / Linear | kernel (in, out) | weight (out, in) |
| Conv1D/2D/3D | kernel (k..., in, out) | weight (out, in, k...) |
| Conv*Transpose | kernel (k..., out, in) | weight (in, out, k...) |
| DepthwiseConv1D/2D | kernel (k..., in, mult) | weight (in*mult, 1, k...) (groups=in) |
| BatchNormalization | gamma, beta, moving_mean, moving_variance | weight, bias, running_mean, running_var |
| Embedding | embeddings (n, dim) (`_embeddings` in a TF2 checkpoint) | weight (n, dim) |

The layer kind comes from the names: a Keras 3 file names each weight by its
layer's class-derived name and position (`layers/conv2d/vars/0`), Keras 2 and
`--names model` names hold the layer's name and the attribute
(`sequential/dense/kernel`); else the attribute and the rank decide (`kernel`
of rank 2 is a Dense kernel, of rank 3-5 a convolution's). A TF2 checkpoint's
object graph records no layer classes; under its paths (`_operations/3/kernel`)
a depthwise kernel (k..., in, mult) is told by its layer's bias, of in*mult
elements where a convolution's has out (the last axis). A depthwise layer
without a bias looks like a convolution there: name it with `--transpose`. The way back (`--layout tf`) reads
PyTorch names (`.` separated) the same way, a `weight` and `bias` whose scope holds
`running_mean`/`running_var` being BatchNormalization's gamma and beta whatever the scope's name; a depthwise weight
(in*mult, 1, k...) goes back with a depth multiplier of 1 unless `--transpose`
says otherwise; a rank-2 `weight` that no name calls an Embedding's is a Dense
kernel, unless the caller names it in `embeddings` (convert --like, after its template).

Transposes stream: a tensor up to MEMORY_BOUND is gathered in memory once and
handed on in blocks; a larger one is staged in a temp file beside the
destination and read back by ranges, a block of the output at a time.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING, Iterator

from ckpttool.errors import Refused, UsageProblem

if TYPE_CHECKING:  # numpy is imported where the bytes are worked on, not to plan
    import numpy as np

LAYOUTS = ("torch", "tf")
MEMORY_BOUND = 128 << 20  # one tensor in memory (plus a block); larger ones are staged on disk
BLOCK_BYTES = 8 << 20  # output transposed in blocks of about this size (8 MiB: taller tiles, fewer loops)
TF_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"

# Keras 3 file positions (`vars/N`) of each layer class's weights, in Keras' order.
_POSITIONS = {
    "dense": ("kernel", "bias"), "conv": ("kernel", "bias"), "conv_transpose": ("kernel", "bias"),
    "depthwise": ("kernel", "bias"), "embedding": ("embeddings",),
    "batch_norm": ("gamma", "beta", "moving_mean", "moving_variance"),
    "layer_norm": ("gamma", "beta"),
}
# Keras 3 keeps Dense/Conv kernels and Embedding tables as `_kernel`, `_embeddings` in a TF2 object graph.
_TORCH_NAMES = {"kernel": "weight", "_kernel": "weight", "depthwise_kernel": "weight", "embeddings": "weight",
                "_embeddings": "weight",
                "gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var",
                "bias": "bias"}


@dataclass(frozen=True)
class LayoutChange:
    kind: str  # dense, conv, conv_transpose, depthwise, batch_norm, embedding, layer_norm, by hand
    name: str  # the new name (before the user's rename rules)
    perm: tuple[int, ...] | None  # source axes in output order; None: the bytes stay as they are
    shape: tuple[int, ...]  # the output shape

    def describe(self, source_shape: tuple[int, ...]) -> str:
        if self.perm is None:
            return f"{self.kind}: axes kept" if self.kind == "by hand" else f"{self.kind}: renamed"
        reshape = "" if _permuted(source_shape, self.perm) == self.shape else f", reshaped to {list(self.shape)}"
        return f"{self.kind}: transposed {list(source_shape)} by {list(self.perm)}{reshape}"


def _permuted(shape, perm) -> tuple[int, ...]:
    return tuple(shape[p] for p in perm)


def parse_transpose(text: str) -> tuple[str, tuple[int, ...]]:
    """`REGEX=PERM` (PERM as `1,0` or `(3,2,0,1)`) from --transpose."""
    from ckpttool.ops.patterns import compile_pattern

    pattern, sep, perm = text.rpartition("=")
    try:
        axes = tuple(int(p) for p in perm.strip().strip("()[]").split(",") if p.strip())
    except ValueError:
        axes = ()
    if not sep or not pattern or not axes or sorted(axes) != list(range(len(axes))):
        raise UsageProblem(f"--transpose takes REGEX=PERM with PERM a permutation such as 1,0 or 3,2,0,1, "
                           f"got {text!r}")
    compile_pattern(pattern, "--transpose")
    return pattern, axes


def layer_kind(segment: str) -> str | None:
    """The layer kind a Keras layer name (`conv2d_transpose_1`, `batch_normalization`) says."""
    base = re.sub(r"_\d+$", "", segment.lower())
    if "depthwise" in base:
        return "depthwise"
    if "conv" in base and "transpose" in base:
        return "conv_transpose"
    if re.fullmatch(r"(separable_)?conv(olution)?[123]?d?", base):
        return "conv" if not base.startswith("separable") else None
    if base in ("dense", "linear") or base.startswith("dense"):
        return "dense"
    if "embedding" in base:
        return "embedding"
    if base in ("batch_normalization", "batchnorm", "batch_norm", "bn") or base.startswith("batch_norm"):
        return "batch_norm"
    if base in ("layer_normalization", "layernorm", "layer_norm", "ln"):
        return "layer_norm"
    return None


def _kind_hint(parts: list[str]) -> str | None:
    for segment in reversed(parts):
        kind = layer_kind(segment)
        if kind:
            return kind
    return None


def _kernel_kind(hint: str | None, shape: tuple[int, ...]) -> str | None:
    """A kernel's layer kind: the name's hint where the rank fits it, else the rank's."""
    by_rank = "dense" if len(shape) == 2 else "conv" if 3 <= len(shape) <= 5 else None
    if hint in ("depthwise", "conv_transpose") and 3 <= len(shape) <= 5:
        return hint
    return by_rank


def _depthwise_by_bias(name: str, base: str, shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]]) -> bool:
    """A `kernel` (k..., a, b) whose layer's bias has a*b elements, not b: a depthwise kernel
    (k..., in, mult), whose bias has in*mult, where a convolution's has b (out) and a transposed
    one's a (Keras 3 names Conv and Dense kernels `_kernel`, depthwise and transposed ones `kernel`)."""
    if not 3 <= len(shape) <= 4:
        return False
    suffix = name[len(base):]
    bias = shapes.get(base.rsplit("/", 1)[0] + "/bias" + suffix)
    return bias is not None and len(bias) == 1 and bias[0] == shape[-2] * shape[-1] != shape[-1]


def _torch_perm(kind: str, shape: tuple[int, ...]) -> tuple[tuple[int, ...] | None, tuple[int, ...]]:
    rank = len(shape)
    if kind == "dense" and rank == 2:
        return (1, 0), (shape[1], shape[0])
    if kind in ("conv", "conv_transpose") and 3 <= rank <= 5:
        perm = (rank - 1, rank - 2, *range(rank - 2))
        return perm, _permuted(shape, perm)
    if kind == "depthwise" and 3 <= rank <= 4:
        perm = (rank - 2, rank - 1, *range(rank - 2))
        return perm, (shape[-2] * shape[-1], 1, *shape[:-2])
    return None, shape


def _tf_perm(kind: str, shape: tuple[int, ...]) -> tuple[tuple[int, ...] | None, tuple[int, ...]]:
    rank = len(shape)
    if kind == "dense" and rank == 2:
        return (1, 0), (shape[1], shape[0])
    if kind in ("conv", "conv_transpose") and 3 <= rank <= 5:
        perm = (*range(2, rank), 1, 0)
        return perm, _permuted(shape, perm)
    if kind == "depthwise" and 3 <= rank <= 4 and shape[1] == 1:
        perm = (*range(2, rank), 0, 1)  # (in, 1, k...) -> (k..., in, 1): a depth multiplier of 1
        return perm, _permuted(shape, perm)
    return None, shape


def _to_torch(name: str, shape: tuple[int, ...], siblings: dict[str, tuple[int, ...]]) -> LayoutChange | None:
    base = name[: -len(TF_SUFFIX)] if name.endswith(TF_SUFFIX) else name
    parts = base.split("/")
    if len(parts) >= 3 and parts[-2] == "vars" and parts[-1].isdigit():  # a Keras 3 file: layers/<layer>/vars/N
        kind = layer_kind(parts[-3])
        positions = _POSITIONS.get(kind or "", ())
        index = int(parts[-1])
        if kind == "batch_norm" and sum(f"{'/'.join(parts[:-1])}/{i}" in siblings for i in range(4)) != 4:
            return None  # center=False or scale=False shifts the positions: not guessed
        if index >= len(positions):
            return LayoutChange("renamed", base, None, shape) if base != name else None
        attribute, stem = positions[index], parts[:-2]
    else:
        # legacy Keras HDF5 and TF1 names end in the tensor's output index: `dense/kernel:0`
        attribute, stem = re.sub(r":\d+$", "", parts[-1]), parts[:-1]
        if attribute not in _TORCH_NAMES:  # PyTorch names carry no TF attribute suffix
            return LayoutChange("renamed", base, None, shape) if base != name else None
        hint = _kind_hint(stem)
        if attribute == "depthwise_kernel":
            kind = "depthwise"
        elif attribute in ("kernel", "_kernel"):
            kind = _kernel_kind(hint, shape)
            if hint is None and attribute == "kernel" and _depthwise_by_bias(name, base, shape, siblings):
                kind = "depthwise"
        elif attribute in ("embeddings", "_embeddings"):
            kind = "embedding"
        elif attribute in ("gamma", "beta"):
            kind = "layer_norm" if hint == "layer_norm" else "batch_norm"
        elif attribute in ("moving_mean", "moving_variance"):
            kind = "batch_norm"
        else:  # bias: the same name in both
            kind = hint or "layer"
        if kind is None:
            return LayoutChange("renamed", base, None, shape) if base != name else None
    perm, out_shape = _torch_perm(kind, shape) if attribute in ("kernel", "_kernel", "depthwise_kernel") \
        else (None, shape)
    new = "/".join([*stem, _TORCH_NAMES[attribute]])
    if perm is None and new == name:
        return None
    return LayoutChange(kind, new, perm, out_shape)


def _to_tf(name: str, shape: tuple[int, ...], siblings: dict[str, tuple[int, ...]],
           embeddings: frozenset[str] = frozenset()) -> LayoutChange | None:
    parts = re.split(r"[./]", name)
    attribute, stem = parts[-1], parts[:-1]
    prefix = "/".join(stem)
    keras_file = len(stem) >= 2 and stem[-2] == "layers"  # back to a Keras 3 file's layers/<layer>/vars/N
    hint = _kind_hint(stem[-1:]) if stem else None
    # Its scope's running statistics make a weight and bias BatchNormalization's, whatever the scope
    # is called (`model._functional._operations.2.weight`): named as this name is, separators kept.
    scope = name[: len(name) - len(attribute)]
    batch_norm = hint == "batch_norm" or any(scope + stat in siblings for stat in ("running_mean", "running_var"))
    if attribute in ("running_mean", "running_var"):
        kind, keras = "batch_norm", {"running_mean": "moving_mean", "running_var": "moving_variance"}[attribute]
    elif attribute in ("weight", "bias") and (batch_norm or hint == "layer_norm") and len(shape) == 1:
        kind, keras = ("batch_norm" if batch_norm else "layer_norm"), {"weight": "gamma", "bias": "beta"}[attribute]
    elif attribute == "weight" and (hint == "embedding" or name in embeddings) and len(shape) == 2:
        kind, keras = "embedding", "embeddings"
    elif attribute == "weight" and _kernel_kind(hint, shape):
        kind, keras = _kernel_kind(hint, shape), "kernel"
    elif attribute == "bias":
        kind, keras = hint or "layer", "bias"
    else:  # not a layer weight this knows: PyTorch's separators become TensorFlow's all the same
        return LayoutChange("renamed", "/".join(parts), None, shape) if "." in name else None
    perm, out_shape = _tf_perm(kind, shape) if keras == "kernel" else (None, shape)
    if keras_file:
        positions = _POSITIONS.get(kind, ())
        if keras not in positions:
            return LayoutChange("renamed", "/".join(parts), None, shape)
        new = f"{prefix}/vars/{positions.index(keras)}"
    else:
        new = f"{prefix}/{keras}" if prefix else keras
    return LayoutChange(kind, new, perm, out_shape)


def plan_layout(variables: list[tuple[str, tuple[int, ...]]], layout: str | None,
                transposes: tuple[tuple[str, tuple[int, ...]], ...] = (),
                embeddings: frozenset[str] = frozenset()) -> dict[str, LayoutChange]:
    """Source name -> LayoutChange for every variable the layout (or a --transpose) changes.
    `embeddings`: PyTorch `weight`s that `--layout tf` takes for Embedding tables whatever their
    names say (convert --like knows them from the template)."""
    from ckpttool.ops.patterns import compile_pattern

    if layout is not None and layout not in LAYOUTS:
        raise UsageProblem(f"--layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    names = dict(variables)
    by_hand = [(compile_pattern(p, "--transpose"), perm) for p, perm in transposes]
    changes: dict[str, LayoutChange] = {}
    for name, shape in variables:
        change = None
        if layout == "torch":
            change = _to_torch(name, shape, names)
        elif layout == "tf":
            change = _to_tf(name, shape, names, embeddings)
        for pattern, perm in by_hand:  # stated by hand: wins over the layout's permutation
            if pattern.search(name):
                if len(perm) != len(shape):
                    raise UsageProblem(f"--transpose {pattern.pattern}={','.join(map(str, perm))}: {name!r} has "
                                       f"rank {len(shape)}, the permutation {len(perm)} axes")
                identity = perm == tuple(range(len(shape)))
                change = LayoutChange("by hand", change.name if change else name, None if identity else perm,
                                      _permuted(shape, perm))
                break
        if change is not None:
            changes[name] = change
    return changes


def lone_matrices(changes: dict[str, LayoutChange], siblings: set[str]) -> frozenset[str]:
    """The PyTorch `weight`s `--layout tf` took for Dense kernels on their rank alone, with no bias
    beside them: a torch.nn.Embedding's table looks the same where no name says which it is (a TF2
    checkpoint's position scopes, `_operations.1.weight`)."""
    return frozenset(name for name, change in changes.items()
                     if change.kind == "dense" and re.split(r"[./]", name)[-1] == "weight"
                     and name[: -len("weight")] + "bias" not in siblings)


# -- streaming ----------------------------------------------------------------------------------

def _element_dtype(itemsize: int):
    import numpy as np

    return np.dtype({1: "u1", 2: "<u2", 4: "<u4", 8: "<u8"}.get(itemsize, f"V{itemsize}"))


def _output_blocks(shape: tuple[int, ...], itemsize: int, block_bytes: int) -> Iterator[tuple]:
    """Index tuples covering an array of `shape` in C order, each about `block_bytes` or less
    (a leading index per outer axis, a slice on the axis that is split, the rest whole)."""
    inner, split = itemsize, len(shape)
    while split > 0 and inner * shape[split - 1] <= block_bytes:
        inner *= shape[split - 1]
        split -= 1
    if split == 0:
        yield ()
        return
    import numpy as np

    rows = max(1, block_bytes // inner)
    for lead in np.ndindex(*shape[: split - 1]):
        for start in range(0, shape[split - 1], rows):
            yield lead + (slice(start, min(start + rows, shape[split - 1])),)


LINE_BYTES = 64  # a cache line: each tile writes this much of every output row it covers


def _contiguous(view, out=None) -> "np.ndarray":
    """A C-order copy of a permuted view (into `out`, a C-order array of its shape and dtype, when
    given), in tiles a cache line wide on the output's contiguous axis and whole on the source's: the
    source rows a tile reads stay in cache while it is written, and every output cache line is
    written whole (numpy's own copy walks the source a page per element: 2x slower; square 256 x
    256 tiles were 1.6x slower than these)."""
    import numpy as np

    if out is None:
        out = np.empty(view.shape, view.dtype)
    last = view.ndim - 1
    source_last = int(np.argmin([abs(s) if n > 1 else 1 << 62 for s, n in zip(view.strides, view.shape)])) \
        if view.ndim else 0
    if view.ndim < 2 or source_last == last:
        out[...] = view
        return out
    width = max(1, LINE_BYTES // view.dtype.itemsize)
    index = [slice(None)] * view.ndim
    for b in range(0, view.shape[last], width):
        index[last] = slice(b, b + width)
        out[tuple(index)] = view[tuple(index)]
    return out


def _handed_on(array) -> Iterator[memoryview]:
    """A C-order array's bytes in pieces small enough to stay in cache from here to the write, as
    views: every consumer (the writers, the cast) writes or copies a piece before it asks for the
    next, so the block buffer is reused only then (a copy of each piece cost a copy of every byte)."""
    from ckpttool.formats.raw import CHUNK_BYTES

    data = memoryview(array.reshape(-1).view("u1"))
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start:start + CHUNK_BYTES]


def _permuted_blocks(shape: tuple[int, ...], itemsize: int, block_bytes: int, block_of) -> Iterator[bytes]:
    """The C-order bytes of a permuted tensor of (output) `shape`, a block of the output at a time:
    `block_of(index)` gives the permuted view of each block's elements, copied through one buffer
    reused for every block (fresh pages cost a fault each), the size of the largest."""
    indexes = list(_output_blocks(shape, itemsize, block_bytes))
    largest = max(_nbytes(index, shape, itemsize) for index in indexes)
    with _Blocks.buffer(largest) as buffer:
        for index in indexes:
            view = block_of(index)
            out = buffer[:view.nbytes].view(view.dtype).reshape(view.shape)
            yield from _handed_on(_contiguous(view, out))


def _nbytes(index: tuple, shape: tuple[int, ...], itemsize: int) -> int:
    """The bytes of the block `index` (as _output_blocks makes them) of an array of `shape`."""
    size = itemsize
    for axis, dim in enumerate(shape):
        part = index[axis] if axis < len(index) else slice(None)
        if isinstance(part, slice):
            size *= len(range(*part.indices(dim)))
    return size


class _Gathered:
    """One buffer per thread that a tensor under the memory bound is gathered into, reused from tensor
    to tensor (a fresh 64 MiB costs 16,384 page faults) and never larger than the largest; a second
    stream while one holds it (nothing does that today) gets a buffer of its own."""
    local = None

    @classmethod
    @contextlib.contextmanager
    def buffer(cls, size: int) -> Iterator["np.ndarray"]:
        import threading

        import numpy as np

        if cls.local is None:
            cls.local = threading.local()
        held = getattr(cls.local, "buffer", None)
        if getattr(cls.local, "busy", False):
            yield np.empty(size, np.uint8)
            return
        if held is None or held.nbytes < size:
            cls.local.buffer = held = None  # the old one goes before the new one is made
            cls.local.buffer = held = np.empty(size, np.uint8)
        cls.local.busy = True
        try:
            yield held[:size]
        finally:
            cls.local.busy = False


class _Blocks(_Gathered):
    """The one block buffer a transposed block is copied into, kept from tensor to tensor as the
    gathered buffer is (a fresh one per tensor left the allocator's heap 8 MiB larger)."""
    local = None


def _in_memory(chunks: Iterator[bytes], shape, itemsize: int, perm, total: int) -> Iterator[bytes]:
    import numpy as np

    with _Gathered.buffer(total) as buffer:
        filled = 0
        for chunk in chunks:
            if filled + len(chunk) > total:
                raise ValueError("a variable's stored bytes overfill its shape")  # the readers check sizes: a bug
            buffer[filled:filled + len(chunk)] = np.frombuffer(chunk, np.uint8)
            filled += len(chunk)
        if filled != total:
            raise ValueError("a variable's stored bytes do not fill its shape")  # the readers check sizes: a bug
        array = buffer.view(_element_dtype(itemsize)).reshape(shape).transpose(perm)
        yield from _permuted_blocks(array.shape, itemsize, BLOCK_BYTES, array.__getitem__)


def _read_region(fd: int, shape, itemsize: int, region: list) -> "np.ndarray":
    """The source elements at `region` (an int or a slice per axis) of the C-order array in file `fd`,
    read by ranges: one pread per run of contiguous bytes."""
    import numpy as np

    spans = [(r, r + 1) if isinstance(r, int) else (r.start, r.stop) for r in region]
    last = max((axis for axis, (a, b) in enumerate(spans) if (a, b) != (0, shape[axis])), default=-1)
    strides = [itemsize * prod(shape[axis + 1:]) for axis in range(len(shape))]
    run = (spans[last][1] - spans[last][0]) * strides[last] if last >= 0 else strides[0] * shape[0]
    extents = [b - a for a, b in spans]
    out = np.empty(prod(extents) * itemsize, dtype="u1")
    position = 0
    for lead in np.ndindex(*extents[:max(last, 0)]):
        offset = sum((spans[axis][0] + i) * strides[axis] for axis, i in enumerate(lead))
        offset += spans[last][0] * strides[last] if last >= 0 else 0
        view = memoryview(out)[position:position + run]
        while len(view):
            got = os.preadv(fd, [view], offset)
            if got <= 0:
                raise ValueError("the staged tensor file is short")  # we wrote it: a bug
            view, offset = view[got:], offset + got
        position += run
    return out.view(_element_dtype(itemsize)).reshape(extents)


def _staged(chunks: Iterator[bytes], shape, itemsize: int, perm, beside: str, block_bytes: int) -> Iterator[bytes]:
    from ckpttool.storage.atomic import create_temp_beside, discard_replacement

    fd, temp = create_temp_beside(beside)
    reading = -1
    try:
        # read back through a second descriptor (the helper's is write-only), checked to be the same file
        reading = os.open(temp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        if not os.path.samestat(os.fstat(fd), os.fstat(reading)):
            raise Refused(f"the temp file {temp} was replaced while ckpttool was writing it")
        os.unlink(temp)  # nothing else may open it now, and a crash leaves nothing behind
        temp = ""
        for chunk in chunks:
            view = memoryview(chunk)
            while len(view):
                view = view[os.write(fd, view):]
        def block(index) -> "np.ndarray":
            region: list = [slice(0, size) for size in shape]
            for axis, i in enumerate(index):
                region[perm[axis]] = i
            return _read_region(reading, shape, itemsize, region).transpose(perm)

        yield from _permuted_blocks(_permuted(shape, perm), itemsize, block_bytes, block)
    finally:
        os.close(fd)
        if reading >= 0:
            os.close(reading)
        if temp:
            discard_replacement(temp)


def permute_stream(chunks: Iterator[bytes], shape: tuple[int, ...], itemsize: int, perm: tuple[int, ...],
                   beside: str, memory_bound: int | None = None) -> Iterator[bytes]:
    """The C-order bytes of the tensor `chunks` hold (of `shape`) with its axes in `perm` order.
    Memory stays under about `memory_bound` plus a block: a larger tensor is staged in a temp file
    beside `beside` (created with storage/atomic's temp helper) and read back by ranges."""
    bound = MEMORY_BOUND if memory_bound is None else memory_bound
    total = prod(shape) * itemsize
    if perm == tuple(range(len(shape))) or total == 0:
        yield from chunks
    elif total <= bound:
        yield from _in_memory(chunks, shape, itemsize, perm, total)
    else:
        yield from _staged(chunks, shape, itemsize, perm, beside, max(BLOCK_BYTES, bound // 2))
