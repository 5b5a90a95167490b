"""What `prune` may delete besides whole checkpoints: only what is provably
checkpoint debris, and only by names a checkpoint's files can have.

A user's `vocab.index` (text), `embeddings.data-00000-of-00001` (no index,
never in the state file), `checkpoint.tmpl` or `eval_temp/` directory look
like checkpoint files by name alone; deleting them from a cron job would lose
data. So each kind of debris needs evidence:
- an incomplete checkpoint: an index whose first entry is a tensor-bundle
  header (a half-written index starts with one too), or a state-file entry
  saying the prefix had an index;
- a `*_temp` directory: every entry a regular `part-NNNNN-of-NNNNN` file of a
  sharded save (an empty one only when named `PREFIX-STEP_temp`);
- a temp file: TensorFlow's `.tempstate<digits>` of an index or data shard,
  or a `.tmp<32 hex digits>` temp (TensorFlow's and ckpttool's atomic writes),
  of the state file or of a file of a checkpoint the directory holds (or its
  state file lists), or one whose bytes begin like an index: a user's
  `notes.data-00000-of-00001.tempstate7` is named like one, nothing more.
"""
from __future__ import annotations

import os
import re

from typing import Callable, Container

from ckpttool.errors import CkptError
from ckpttool.storage import fs
from ckpttool.storage.fs import read_head_and_tail
from ckpttool.formats.tf.messages import parse_header
from ckpttool.formats.tf.shards import split_v1_pattern, v1_shard
from ckpttool.formats.tf.table import first_plain_entry

_CHECKPOINT_SUFFIX_RE = re.compile(r"^(\.index|\.meta|\.data-\d{5}-of-\d{5})\Z")
_TEMPSTATE_RE = re.compile(r"^.+\.(index|data-\d{5}-of-\d{5})\.tempstate\d+\Z")
_TMP_RE = re.compile(r"^.+\.tmp[0-9a-f]{32}\Z")
_TEMP_DIR_RE = re.compile(r"^(?P<prefix>.+)_temp(_[0-9a-f]{32})?\Z")
_PART_FILE_RE = re.compile(r"^part-\d{5}-of-\d{5}\.(index|data-\d{5}-of-\d{5})(\.tempstate\d+)?\Z")
_FILE_OF_RE = re.compile(r"^(?P<stem>.+)\.(index|meta|data-\d{5}-of-\d{5})\Z")
_TMP_SUFFIX_LEN = len(".tmp") + 32
_STEP_RE = re.compile(r"-\d+\Z")
_HEAD_BYTES = 4096


def is_checkpoint_file_of(name: str, basename: str) -> bool:
    """True if `basename` is one of the files checkpoint `name` has: NAME.index, .meta, .data-N-of-M;
    for a sharded V1 save named P-?????-of-N, P-SSSSS-of-N and P.meta."""
    pattern = split_v1_pattern(name)
    if pattern is not None:
        shard = v1_shard(basename)
        return basename == pattern[0] + ".meta" or (shard is not None and shard[0] == pattern[0]
                                                     and shard[2] == pattern[1] and shard[1] < pattern[1])
    return basename.startswith(name) and bool(_CHECKPOINT_SUFFIX_RE.match(basename[len(name):]))


def starts_with_bundle_header(path: str) -> bool:
    """True if the regular file at `path` begins like a tensor-bundle index (even a half-written one,
    which has no footer yet: TensorFlow writes the first block, holding the header, first)."""
    try:
        head, _tail, _size = read_head_and_tail(path, _HEAD_BYTES, 0, "checkpoint index")
    except CkptError:
        return False
    first = first_plain_entry(head)
    if first is None or first[0] != b"":
        return False
    try:
        parse_header(first[1], path)
    except CkptError:
        return False
    return True


def is_temp_dir_name(basename: str) -> bool:
    """Named like a sharded save's temporary directory (`PREFIX_temp`, `PREFIX_temp_<32 hex>`)."""
    return bool(_TEMP_DIR_RE.match(basename))


def is_temp_file_debris(basename: str) -> bool:
    """A temp file of an interrupted write, by the names TensorFlow and ckpttool give them."""
    return bool(_TEMPSTATE_RE.match(basename) or _TMP_RE.match(basename))


def temp_file_debris_problem(path: str, is_checkpoint: Callable[[str], bool],
                              state_files: Container[str]) -> str | None:
    """None if file `path` is provably a temp of an interrupted write, else why it is not:
    `is_checkpoint(stem)` says whether the directory holds (or its state file lists) checkpoint
    `stem`, `state_files` are the state files' names (whose `.tmp<32 hex>` temps are debris)."""
    name = fs.basename(path)
    if _TEMPSTATE_RE.match(name):
        target = name[:name.rindex(".tempstate")]
    elif _TMP_RE.match(name):
        target = name[:-_TMP_SUFFIX_LEN]
        if target in state_files:
            return None
    else:
        return f"{name} is not named like a temporary file of a save"
    of = _FILE_OF_RE.match(target)
    if of is not None and is_checkpoint(of["stem"]):
        return None
    if target.endswith(".index") and starts_with_bundle_header(path):
        return None  # an index written before its checkpoint got its name
    return (f"{name} is named like a temporary file of {target}, but there is no checkpoint "
            f"{of['stem'] if of else target} and its bytes do not begin like an index")


def temp_dir_debris_problem(path: str) -> str | None:
    """None if `path` is provably a sharded save's `*_temp` directory, else why it is not.

    Its entries must all be part files of a sharded save; an empty one counts
    only when its name is a stepped checkpoint prefix (`ckpt-5_temp`), since an
    empty `eval_temp/` could be anybody's.
    """
    return temp_dir_parts(path)[0]


def temp_dir_parts(path: str) -> tuple[str | None, tuple[str, ...]]:
    """(temp_dir_debris_problem, the part files found) from one listing of `path`: a bucket's
    `*_temp` prefix is removed by deleting exactly these keys, never by a recursive delete
    (which would also take an object named like the prefix, or anything written since)."""
    basename = fs.basename(path)
    match = _TEMP_DIR_RE.match(basename)
    if not match:
        return f"{basename} is not named like a checkpoint's temporary directory", ()
    parts = []
    try:
        for entry in fs.list_dir(path):
            if entry.kind != "file" or not _PART_FILE_RE.match(entry.name):
                return f"{basename}/ holds {entry.name}, which is not a part file of a sharded save", ()
            parts.append(entry.path)
    except OSError as exc:
        return f"cannot list {basename}/: {exc.strerror}", ()
    if not parts and not _STEP_RE.search(match["prefix"]):
        return f"{basename}/ is empty and not named like a checkpoint's (PREFIX-STEP_temp)", ()
    return None, tuple(parts)


def incomplete_checkpoint_problem(index_path: str | None, in_state: bool) -> str | None:
    """None if an incomplete checkpoint is provably one (its index starts like a bundle, or the
    state file lists it), else why it is not and must be left alone."""
    if in_state:
        return None
    if index_path is not None and starts_with_bundle_header(index_path):
        return None
    if index_path is not None:
        return f"{os.path.basename(index_path)} is not a tensor-bundle index"
    return "data files without an index, never listed in the state file"
