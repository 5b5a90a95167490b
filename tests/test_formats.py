"""Format facts from FORMAT.md, each confirmed on bytes TensorFlow wrote."""
from __future__ import annotations

import glob
import subprocess
import sys

import pytest

from ckpttool.formats.tf import crc32c
from ckpttool.formats.tf.ordered_code import decode_slice_key, encode_signed_num_increasing, encode_slice_key
from ckpttool.formats.tf.state import format_state, parse_state
from ckpttool.formats.tf.table import build_table, read_table, short_successor
from tests.conftest import ROOT


def test_crc32c_and_mask():
    assert crc32c.crc32c(b"123456789") == 0xE3069283
    assert crc32c.mask(0) == 0xA282EAD8
    for value in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert crc32c.unmask(crc32c.mask(value)) == value
    assert crc32c.extend(crc32c.crc32c(b"1234"), b"56789") == 0xE3069283


def _data_block_count(data: bytes) -> int:
    from ckpttool.formats.tf.table import table_layout

    return len(table_layout(data).data_blocks)


def test_table_regenerated_byte_for_byte(fixtures_dir):
    """Every TF-written .index (and V1 file) is rebuilt identically by our table writer."""
    files = glob.glob(str(fixtures_dir / "**" / "*.index"), recursive=True)
    files.append(str(fixtures_dir / "v1_format" / "model.ckpt-3"))
    multi_block = False
    for path in files:
        data = open(path, "rb").read()
        items = read_table(data, path)
        assert build_table(items) == data, path
        multi_block |= _data_block_count(data) > 1
    assert multi_block, "the many_vars fixture should need more than one data block"


def test_short_successor_examples():
    assert short_successor(b"str") == b"t"
    assert short_successor(b"global_step") == b"h"


@pytest.mark.parametrize("value,encoded", [(0, "80"), (3, "83"), (-1, "7f"), (0x424242, "f0424242"), (-0x800, "3800")])
def test_signed_num_increasing(value, encoded):
    assert encode_signed_num_increasing(value).hex() == encoded


def test_slice_keys_in_tensorflow_index(fixtures_dir):
    data = open(fixtures_dir / "partitioned" / "model.ckpt-5.index", "rb").read()
    slice_keys = [k for k, _ in read_table(data) if k.startswith(b"\x00")]
    decoded = {decode_slice_key(k) for k in slice_keys}
    assert (b"scope/part", ((0, 3), (0, 2))) in decoded
    assert (b"scope/part", ((3, 2), (0, 2))) in decoded
    assert encode_slice_key(b"scope/part", [(0, 3), (0, 2)]).hex() == "0073636f70652f706172740001010280838082"
    for key in slice_keys:
        name, extents = decode_slice_key(key)
        assert encode_slice_key(name, extents) == key


def test_state_file_round_trip(fixtures_dir):
    text = (fixtures_dir / "tf2_manager" / "checkpoint").read_text()
    state = parse_state(text)
    assert state.model_checkpoint_path == "ckpt-3"
    assert state.all_model_checkpoint_paths == ("ckpt-2", "ckpt-3")
    assert len(state.all_model_checkpoint_timestamps) == 2
    assert format_state(state) == text  # the same text TensorFlow wrote


def test_our_protos_match_tensorflow_descriptors(tf):
    """Field numbers and wire types of every mirrored message equal TensorFlow's."""
    from tensorflow.core.framework import attr_value_pb2, function_pb2, node_def_pb2, op_def_pb2
    from tensorflow.core.framework import graph_pb2 as tf_graph
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, tensor_slice_pb2
    from tensorflow.core.protobuf import (
        meta_graph_pb2,
        saved_model_pb2,
        saver_pb2,
        tensor_bundle_pb2,
        trackable_object_graph_pb2,
    )
    from tensorflow.core.util import saved_tensor_slice_pb2
    from tensorflow.python.training import checkpoint_state_pb2

    from ckpttool.formats.tf.protos import checkpoint_pb2, graph_pb2

    pairs = [
        (checkpoint_pb2.BundleHeaderProto, tensor_bundle_pb2.BundleHeaderProto),
        (checkpoint_pb2.BundleEntryProto, tensor_bundle_pb2.BundleEntryProto),
        (checkpoint_pb2.TensorShapeProto, tensor_shape_pb2.TensorShapeProto),
        (checkpoint_pb2.TensorSliceProto, tensor_slice_pb2.TensorSliceProto),
        (checkpoint_pb2.TensorProto, tensor_pb2.TensorProto),
        (checkpoint_pb2.SavedTensorSlices, saved_tensor_slice_pb2.SavedTensorSlices),
        (checkpoint_pb2.SavedSliceMeta, saved_tensor_slice_pb2.SavedSliceMeta),
        (checkpoint_pb2.SavedSlice, saved_tensor_slice_pb2.SavedSlice),
        (checkpoint_pb2.TrackableObjectGraph, trackable_object_graph_pb2.TrackableObjectGraph),
        (checkpoint_pb2.CheckpointState, checkpoint_state_pb2.CheckpointState),
        (graph_pb2.MetaGraphDef, meta_graph_pb2.MetaGraphDef),
        (graph_pb2.SavedModel, saved_model_pb2.SavedModel),
        (graph_pb2.SaverDef, saver_pb2.SaverDef),
        (graph_pb2.GraphDef, tf_graph.GraphDef),
        (graph_pb2.SignatureDef, meta_graph_pb2.SignatureDef),
        (graph_pb2.CollectionDef, meta_graph_pb2.CollectionDef),
        (graph_pb2.TensorInfo, meta_graph_pb2.TensorInfo),
        (graph_pb2.NodeDef, node_def_pb2.NodeDef),
        (graph_pb2.AttrValue, attr_value_pb2.AttrValue),
        (graph_pb2.FunctionDef, function_pb2.FunctionDef),
        (graph_pb2.OpDef, op_def_pb2.OpDef),
    ]
    def wire(field_type: int) -> int:
        return 5 if field_type == 14 else field_type  # some enums are int32 in ours: same varint on the wire

    def check(ours, theirs):
        for field in ours.fields:
            other = theirs.fields_by_name[field.name]
            assert field.number == other.number, (ours.full_name, field.name)
            assert wire(field.type) == wire(other.type), (ours.full_name, field.name)
            if field.message_type is not None:
                check(field.message_type, other.message_type)

    for ours, theirs in pairs:
        check(ours.DESCRIPTOR, theirs.DESCRIPTOR)


def test_generated_protos_are_current():
    pytest.importorskip("grpc_tools")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


STATE_TEXTS = [
    'model_checkpoint_path: "ckpt-3"\nall_model_checkpoint_paths: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-3"\n'
    "all_model_checkpoint_timestamps: 1795293813.9609382\nall_model_checkpoint_timestamps: 1.5e9\n"
    "last_preserved_timestamp: 1795293812\n",
    'model_checkpoint_path: "/abs/dir/model.ckpt-5"\r\nall_model_checkpoint_paths: "/abs/dir/model.ckpt-5"\r\n',
    '  model_checkpoint_path :  "a:b"  \n\n all_model_checkpoint_timestamps: -inf\nall_model_checkpoint_timestamps: nan\n',
    'model_checkpoint_path: "caf\\303\\251"\n',  # what Python's writer makes of a non-ASCII path
    '# a comment\nmodel_checkpoint_path: "x"\n',
    "model_checkpoint_path: 'single'\n",
    'model_checkpoint_path: "a" "b"\n',
    'all_model_checkpoint_timestamps: 1.5f\nall_model_checkpoint_timestamps: .5\n',
    'model_checkpoint_path: "a"\nmodel_checkpoint_path: "b"\n',
    'model_checkpoint_path: 5\n',
    'unknown_field: "x"\n',
    '',
]


@pytest.mark.parametrize("text", STATE_TEXTS)
def test_state_file_parse_equals_tensorflow(tf, text):
    """The fast path for TensorFlow's own layout and protobuf's parser for the rest
    answer as tf.train.get_checkpoint_state reads the file (text_format.Merge), or both refuse."""
    from google.protobuf import text_format
    from tensorflow.python.training import checkpoint_state_pb2

    from ckpttool.errors import CorruptCheckpoint

    expected = checkpoint_state_pb2.CheckpointState()
    try:
        text_format.Merge(text, expected)
    except text_format.ParseError:
        with pytest.raises(CorruptCheckpoint):
            parse_state(text)
        return
    state = parse_state(text)
    assert state.model_checkpoint_path == expected.model_checkpoint_path
    assert list(state.all_model_checkpoint_paths) == list(expected.all_model_checkpoint_paths)
    got, want = list(state.all_model_checkpoint_timestamps), list(expected.all_model_checkpoint_timestamps)
    assert [str(x) for x in got] == [str(x) for x in want]  # NaN-safe and exact
    assert state.last_preserved_timestamp == expected.last_preserved_timestamp
