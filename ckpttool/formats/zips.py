"""Zip archives as checkpoint readers meet them (.npz, .keras, PyTorch files): the errors zipfile
raises on damaged bytes, and the refusal of members that are encrypted or expand far beyond what
they store (a zip bomb). Kept apart from the readers so that telling a file's kind imports no numpy."""
from __future__ import annotations

import os
import zipfile
import zlib

from ckpttool.errors import CorruptCheckpoint, Unsupported
from ckpttool.storage.fs import open_input

ZIP_RATIO_FLOOR = 256 << 20  # members this large ...
ZIP_MAX_RATIO = 100  # ... that expand more than this are refused (DEFLATE of real weights stays far below)
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, zipfile.LargeZipFile, NotImplementedError, ValueError)


def check_zip_member(info: zipfile.ZipInfo, archive: str) -> None:
    """Refuse a member that declares far more bytes than it stores (a zip bomb), or is encrypted
    (zipfile would ask for a password; numpy cannot load it either)."""
    if info.flag_bits & 0x1:
        raise Unsupported(f"{os.path.basename(archive)}: member {info.filename!r} is encrypted; ckpttool reads "
                          "no encrypted archives", hint="decrypt it with your zip tool first")
    if info.file_size > ZIP_RATIO_FLOOR and info.file_size > ZIP_MAX_RATIO * max(info.compress_size, 1):
        raise CorruptCheckpoint(f"{os.path.basename(archive)}: member {info.filename!r} declares {info.file_size} "
                                f"bytes but stores {info.compress_size}; refusing a likely zip bomb",
                                hint="if it is genuine, unzip it yourself and give the extracted file")


def open_zip(path: str, what: str) -> zipfile.ZipFile:
    handle = open_input(path, what)
    try:
        return zipfile.ZipFile(handle)
    except ZIP_ERRORS as exc:
        handle.close()
        raise CorruptCheckpoint(f"{os.path.basename(path)} is not a readable zip archive ({exc})") from None
