"""Local copies of checkpoints that live in buckets, for the jobs that hand
paths to TensorFlow (freeze): the pip TensorFlow has no S3 file system, and
its GCS one does not take our credentials or --storage-option. Only the files
the job reads are fetched, into a temporary directory removed afterwards."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from typing import Iterator

from ckpttool.storage import fs
from ckpttool.ops.targets import Target


def _fetch(url: str, local: str) -> None:
    os.makedirs(os.path.dirname(local), exist_ok=True)
    fs.download(url, local)


@contextlib.contextmanager
def local_target(target: Target) -> Iterator[Target]:
    """`target` itself when it is local, else the same target over a local copy of its files:
    a checkpoint's index, data shards and .meta, or a SavedModel's graph and variables/."""
    if not fs.is_url(target.prefix):
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="ckpttool-fetch-") as staging:
        if target.saved_model_dir:
            root = target.saved_model_dir
            for current, _dirs, files in fs.walk_files(root):
                for name in files:
                    url = fs.join(current, name)
                    _fetch(url, os.path.join(staging, url[len(root):].lstrip("/")))

            def local(path: str | None) -> str | None:
                return None if path is None else os.path.join(staging, path[len(root):].lstrip("/"))

            yield dataclasses.replace(target, prefix=local(target.prefix), meta_path=local(target.meta_path),
                                      saved_model_dir=staging)
            return
        directory = fs.dirname(target.prefix)
        name = fs.basename(target.prefix)
        for entry in fs.list_dir(directory):
            if entry.kind == "file" and entry.name.startswith(name + ".") and (
                    entry.name == name + ".index" or entry.name == name + ".meta" or ".data-" in entry.name):
                _fetch(entry.path, os.path.join(staging, entry.name))
        prefix = os.path.join(staging, name)
        meta = prefix + ".meta" if target.meta_path else None
        yield dataclasses.replace(target, prefix=prefix, meta_path=meta)
