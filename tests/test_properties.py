"""Property-based tests: tables and slice keys round-trip, and mutated index
bytes never make the reader raise anything but our own CkptError."""
from __future__ import annotations

import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckpttool.errors import CkptError
from ckpttool.formats.tf.ordered_code import decode_slice_key, encode_slice_key
from ckpttool.formats.reader import open_checkpoint
from ckpttool.formats.tf.table import build_table, read_table

_entries = st.dictionaries(st.binary(max_size=24), st.binary(max_size=3000), max_size=300)


@settings(max_examples=60, deadline=None)
@given(_entries)
def test_table_round_trip(entries):
    items = sorted(entries.items())
    assert read_table(build_table(items)) == items


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.lists(st.tuples(st.integers(-2**63, 2**63 - 1), st.integers(-2**63, 2**63 - 1)),
                                         max_size=6))
def test_slice_key_round_trip(name, extents):
    assert decode_slice_key(encode_slice_key(name, extents)) == (name, tuple(extents))


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(_mutation, min_size=1, max_size=4), which=st.sampled_from(
    ["saver_run/model.ckpt-50", "partitioned/model.ckpt-5", "every_dtype/dtypes", "tf2_manager/ckpt-3"]))
def test_mutated_index_raises_only_ckpt_error(fixtures_dir, tmp_path_factory, mutations, which):
    work = tmp_path_factory.mktemp("mutated")
    source = fixtures_dir / which
    for path in source.parent.glob(source.name + ".*"):
        shutil.copy(path, work / path.name)
    index = work / (source.name + ".index")
    data = bytearray(index.read_bytes())
    for kind, position, value in mutations:
        position %= max(len(data), 1)
        if kind == "flip" and data:
            data[position] ^= value
        elif kind == "truncate":
            del data[position:]
        else:
            data.insert(position, value)
    index.write_bytes(bytes(data))
    try:
        with open_checkpoint(str(work / source.name)) as reader:
            for var in reader.variables:
                reader.read(var)
    except CkptError:
        pass
