"""Malicious pickles in PyTorch files (issue 28 item 7): code through os.system / posix.system,
eval and exec through `__reduce__`, builtins reached through nested globals, find_class tricks
(dotted names, torch lookalikes, Python 2 module names), state set on our own globals, and bombs
(deep nesting, one container referenced in nested layers, huge declared sizes). Each file is read
by ckpttool in a subprocess whose address space is capped: nothing runs (a marker file a payload
would create never appears), memory stays under the cap, each is one `error:` line and exit 3
(verify: exit 1 with the refusal in its report, as for every file it cannot open)."""
from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile

import pytest

from ckpttool.formats.pytorch.archive import LEGACY_MAGIC, LEGACY_PROTOCOL
from tests.hostile import run_limited


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _call(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"


def _stack_global(module: str, name: str) -> bytes:
    """Protocol 4's STACK_GLOBAL: module and name from the stack (a dotted name is allowed there)."""
    return _text(module) + _text(name) + b"\x93"


def _wrap(body: bytes, proto: int = 2) -> bytes:
    return b"\x80" + bytes([proto]) + body + b"."


def _tensor_pickle(numel: int, shape: tuple[int, ...]) -> bytes:
    """{"w": _rebuild_tensor_v2(storage '0' of `numel` floats, 0, shape, C strides)}, by hand."""
    return b"}" + _text("w") + _tensor(numel, shape) + b"s"


def _tensor(numel: int, shape: tuple[int, ...]) -> bytes:
    strides, step = [], 1
    for size in reversed(shape):
        strides.insert(0, step)
        step *= size
    pid = b"(" + _text("storage") + _global("torch", "FloatStorage") + _text("0") + _text("cpu") + \
        b"\x8a\x08" + struct.pack("<q", numel) + b"tQ"
    ints = lambda values: b"(" + b"".join(b"\x8a\x08" + struct.pack("<q", v) for v in values) + b"t"  # noqa: E731
    return _call(_global("torch._utils", "_rebuild_tensor_v2"), pid, b"K\x00", ints(shape), ints(strides),
                 b"\x89", _call(_global("collections", "OrderedDict")))


def _nested_references(levels: int = 30) -> bytes:
    """{"top": L30}, each level a list of 10 references to the level below, a tensor at the bottom:
    10^30 paths to one tensor (memo references: the pickle stays a few hundred bytes)."""
    body = b"}" + _text("top") + _tensor(4, (4,)) + b"q\x00"
    for level in range(1, levels + 1):
        body += b"0](" + (b"h" + bytes([level - 1])) * 10 + b"eq" + bytes([level])
    return _wrap(body + b"s")


def _marker_command(marker) -> str:
    return f"touch {marker}"


def payloads(marker) -> dict[str, bytes]:
    touch = _text(_marker_command(marker))
    python = _text(f"open({str(marker)!r}, 'w').close()")

    class Reduce:
        def __reduce__(self):
            return os.system, (_marker_command(marker),)

    return {
        "reduce_os_system": pickle.dumps(Reduce(), protocol=2),  # what pickle writes: posix.system
        "os_system": _wrap(_call(_global("os", "system"), touch)),
        "posix_system": _wrap(_call(_global("posix", "system"), touch)),
        "eval": _wrap(_call(_global("builtins", "eval"), python)),
        "exec": _wrap(_call(_global("builtins", "exec"), python)),
        "py2_builtin_eval": _wrap(_call(_global("__builtin__", "eval"), python)),
        "nested_getattr": _wrap(_call(_call(_global("builtins", "getattr"),
                                            _call(_global("builtins", "__import__"), _text("os")), _text("system")),
                                      touch)),
        "dotted_name_from_allowed_module": _wrap(_call(_stack_global("torch._utils", "_rebuild_tensor.__globals__"),
                                                       touch), proto=4),
        "dotted_module": _wrap(_call(_global("torch._utils.os", "system"), touch)),
        "lookalike_module": _wrap(_call(_global("torch._utiIs", "_rebuild_tensor_v2"), touch)),
        "allowed_name_in_other_module": _wrap(_call(_global("subprocess", "_rebuild_tensor_v2"), touch)),
        "torch_class_not_allowed": _wrap(_call(_global("torch.nn.modules.linear", "Linear"))),
        "copyreg_extension": _wrap(b"\x82\x01" + b")R"),
        "build_on_allowed_function": _wrap(_global("torch._utils", "_rebuild_tensor") +
                                           b"N}" + _text("__defaults__") + b"K\x01\x85s\x86b"),
        "build_on_storage_type": _wrap(_global("torch", "FloatStorage") + b"}" + _text("name") + _text("x") + b"sb"),
        "call_a_dtype": _wrap(_call(_global("torch", "float32"), touch)),
        "persistent_id_not_a_storage": _wrap(_text("storage") + b"Q"),
        "deep_nesting": _wrap(b"]" * 100_000 + b"a" * 99_999),
        "nested_references": _nested_references(),
        "repeated_container": _wrap(b"](]q\x00" + b"h\x00" * 2_000_000 + b"e"),
        "huge_bytes": _wrap(b"\x8e" + struct.pack("<Q", 1 << 62) + b"abc"),
        "huge_declared_storage": _wrap(_tensor_pickle(1 << 40, (1 << 40,))),
    }


def torch_zip(pickled: bytes, records: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", b"little")
        for name, data in (records or {"0": b"\x00" * 16}).items():
            archive.writestr(f"archive/data/{name}", data)
        archive.writestr("archive/version", b"3\n")
    return buffer.getvalue()


def torch_legacy(pickled: bytes) -> bytes:
    sys_info = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    head = b"".join(pickle.dumps(value, protocol=2) for value in (LEGACY_MAGIC, LEGACY_PROTOCOL, sys_info))
    return head + pickled + pickle.dumps(["0"], protocol=2) + struct.pack("<q", 4) + b"\x00" * 16


RUNS_CODE = ("reduce_os_system", "os_system", "posix_system", "eval", "exec", "py2_builtin_eval", "nested_getattr",
             "dotted_name_from_allowed_module", "dotted_module", "lookalike_module", "allowed_name_in_other_module",
             "call_a_dtype")
NAMED_GLOBAL = {"reduce_os_system": "posix.system", "os_system": "os.system", "posix_system": "posix.system",
                "eval": "builtins.eval", "exec": "builtins.exec", "py2_builtin_eval": "__builtin__.eval",
                "nested_getattr": "builtins.getattr", "dotted_module": "torch._utils.os.system",
                "lookalike_module": "torch._utiIs._rebuild_tensor_v2",
                "torch_class_not_allowed": "torch.nn.modules.linear.Linear",
                "dotted_name_from_allowed_module": "torch._utils._rebuild_tensor.__globals__"}
CONVERTED = ("os_system", "nested_getattr", "huge_declared_storage", "nested_references")  # convert too
CASES = [(name, "zip") for name in payloads("m")] + [(name, "legacy") for name in
                                                     ("os_system", "eval", "nested_getattr", "deep_nesting")]


@pytest.mark.parametrize("name,layout", CASES)
def test_malicious_pickle_runs_nothing_and_exits_3(tmp_path, name, layout):
    marker = tmp_path / "marker"
    pickled = payloads(marker)[name]
    path = tmp_path / "model.pt"
    path.write_bytes(torch_zip(pickled) if layout == "zip" else torch_legacy(pickled))
    commands = [["inspect", "--stats"]] + ([["convert", "--to", "safetensors"]] if name in CONVERTED else [])
    for args in commands:
        extra = [tmp_path / "out.safetensors"] if args[0] == "convert" else []
        proc = run_limited(*args, path, *extra)
        assert not marker.exists(), f"{name}: the pickle ran code"
        assert proc.returncode == 3, (name, proc.returncode, proc.stderr[-2000:])
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len([line for line in lines if line.startswith("error: ")]) == 1, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and "out of memory" not in proc.stderr, proc.stderr[-2000:]
        if name in NAMED_GLOBAL:
            assert NAMED_GLOBAL[name] in proc.stderr and "model.pt" in proc.stderr, proc.stderr
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("name", ["os_system", "nested_getattr", "huge_declared_storage"])
def test_verify_reports_a_malicious_pickle_as_damage(tmp_path, name):
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    path.write_bytes(torch_zip(payloads(marker)[name]))
    proc = run_limited("verify", "--json", path)
    assert not marker.exists()
    assert proc.returncode == 1, proc.stderr[-2000:]
    import json

    errors = json.loads(proc.stdout)["errors"]
    expected = "refused" if name in NAMED_GLOBAL else "truncated"
    assert [e["problem"] for e in errors] == [expected], errors


def test_code_runs_nowhere_in_process(tmp_path, monkeypatch):
    """The unpickler itself, in this process: os.system is never reached, even when patched to tell."""
    from ckpttool.errors import BadInput, UnsafeFile
    from ckpttool.formats.pytorch.unpickler import unpickle

    files = payloads(tmp_path / "m")
    called = []
    monkeypatch.setattr(os, "system", lambda *args: called.append(args))
    for name in RUNS_CODE:
        with pytest.raises(UnsafeFile if name in NAMED_GLOBAL else BadInput):
            unpickle(files[name], "model.pt")
    assert called == []
