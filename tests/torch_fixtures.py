"""PyTorch files written by torch itself (run once per session in a subprocess by the
`torch_dir` fixture): every dtype ckpttool reads, non-contiguous views and shared storages, in
the zip and the legacy layout; state dicts nested in dicts (`{"model", "optimizer"}`, Lightning's
`{"state_dict"}`); an HF sharded set with its index; a small model for `--layout tf`.

Usage: python tests/torch_fixtures.py OUT_DIR
"""
from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path

import torch


def every_kind() -> OrderedDict:
    """One tensor of each dtype, and the views torch writes as strided storages."""
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(4, 6, generator=gen)
    tied = torch.randn(3, 2, generator=gen)
    state = OrderedDict()
    state["f32"] = torch.randn(3, 5, generator=gen)
    state["f64"] = torch.randn(4, generator=gen, dtype=torch.float64)
    state["f16"] = torch.randn(2, 3, generator=gen).to(torch.float16)
    state["bf16"] = (torch.randn(2, 3, generator=gen) * 1e3).to(torch.bfloat16)
    state["i8"] = torch.randint(-128, 127, (7,), generator=gen, dtype=torch.int8)
    state["i16"] = torch.randint(-30000, 30000, (2, 2), generator=gen, dtype=torch.int16)
    state["i32"] = torch.randint(-2**31, 2**31 - 1, (3,), generator=gen, dtype=torch.int32)
    state["i64"] = torch.tensor([-2**63, 2**63 - 1, 0, 5], dtype=torch.int64)
    state["u8"] = torch.randint(0, 255, (2, 4), generator=gen, dtype=torch.uint8)
    state["u16"] = torch.tensor([0, 1, 65535], dtype=torch.int32).to(torch.uint16)
    state["bool"] = torch.tensor([[True, False], [False, True]])
    state["c64"] = torch.randn(3, generator=gen, dtype=torch.complex64)
    state["scalar"] = torch.tensor(3.25)
    state["empty"] = torch.zeros(0, 3)
    state["transposed"] = base.t()  # strides (1, 6): not contiguous
    state["rows"] = base[1:3]  # a view at an offset of one storage ...
    state["columns"] = base[:, 2:5]  # ... another, strided, over the same storage
    state["every_other"] = base[::2, ::3]
    state["expanded"] = torch.randn(1, 3, generator=gen).expand(4, 3)  # stride 0
    state["tied_a"] = tied  # one tensor under two names (tied weights)
    state["tied_b"] = tied
    state["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=gen))
    return state


class Net(torch.nn.Module):
    """Linear, Conv2d, BatchNorm2d and Embedding: every layout --layout tf changes or renames."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(6, 5)
        self.embedding = torch.nn.Embedding(10, 4)


def main(out: Path) -> None:
    torch.manual_seed(0)
    state = every_kind()
    torch.save(state, out / "every_kind.pt")
    # torch cannot load a legacy file holding the dtypes it pickles with an untyped storage (uint16 ...)
    legacy = OrderedDict((name, tensor) for name, tensor in state.items() if name != "u16")
    torch.save(legacy, out / "every_kind_legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(state, out / "no_extension")  # read by its bytes, whatever its name

    net = Net()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    optimizer = torch.optim.Adam(net.parameters())
    loss = net.fc(torch.randn(2, 6)).sum() + net.conv(torch.randn(1, 3, 5, 5)).sum()
    loss.backward()
    optimizer.step()
    torch.save(net.state_dict(), out / "net.bin")
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}, out / "nested.pt")
    torch.save({"state_dict": net.state_dict(), "epoch": 1, "global_step": 10,
                "pytorch-lightning_version": "2.4.0", "optimizer_states": [optimizer.state_dict()],
                "lr_schedulers": []}, out / "lightning.ckpt")

    sharded = out / "sharded"
    sharded.mkdir()
    names = list(state)
    weight_map = {}
    for number, part in enumerate((names[: len(names) // 2], names[len(names) // 2:]), 1):
        filename = f"pytorch_model-{number:05d}-of-00002.bin"
        torch.save(OrderedDict((name, state[name]) for name in part), sharded / filename)
        weight_map.update({name: filename for name in part})
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
