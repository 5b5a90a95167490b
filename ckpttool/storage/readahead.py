"""Reading ahead on a thread: the pieces an iterator hands out are made on a thread of their own
while the caller uses the ones before (pread, google-crc32c and numpy's large copies let other
threads run), so reading a source overlaps transforming and writing what was read.

The iterator must hand out views of `depth + 2` buffers it takes in turn (see buffers): the
caller holds one piece, at most `depth` wait in the queue, and the thread fills the next; it takes
the caller's buffer again only once the caller asked for the piece after it, so a caller that is
done with each piece before it asks for the next (as every consumer of iter_stored_views is) never
sees one change under it."""
from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")

_DONE = object()
# Below this a tensor is read on the caller's thread: starting a thread (about 0.1 ms) and handing
# each piece over cost more than the little there is to overlap.
READ_AHEAD_BYTES = 4 << 20


def buffers(size: int, count: int) -> list[memoryview]:
    """`count` buffers of `size` bytes (`depth + 2` for an iterator read ahead with `depth`); ctypes,
    not numpy: google-crc32c checksums them in place, and a plain copy imports no numpy."""
    import ctypes

    return [memoryview((ctypes.c_char * size)()).cast("B") for _ in range(count)]


def read_ahead(pieces: Iterator[T], depth: int = 1) -> Iterator[T]:
    """`pieces`, made on a thread up to `depth` ahead of the caller. An error raised there is raised
    here, where the piece it stopped would have been; a caller that stops early (an error of its
    own, Ctrl-C) stops the thread before this generator closes."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for piece in pieces:
                if stop.is_set():
                    return
                ready.put((piece, None))
            ready.put((_DONE, None))
        except BaseException as exc:  # handed over: raised on the caller's thread
            ready.put((_DONE, exc))
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="ckpttool-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            piece, error = ready.get()
            if piece is _DONE:
                if error is not None:
                    raise error
                return
            yield piece
    finally:
        stop.set()
        while thread.is_alive():  # a producer blocked on a full queue takes the stop as it is emptied
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()
