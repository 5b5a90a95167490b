"""Real object-store servers on 127.0.0.1 for the remote tests: moto's S3
server and the GCS emulator, each a real HTTP API in a process of its own
(its logs stay out of the tests' captured output), on port 0 so that no port
is guessed; the process says `READY <port>` once it listens, which is what
the tests wait for. Plus a byte-counting TCP proxy. Clients reach the servers
through the backends' standard settings (AWS_ENDPOINT_URL,
STORAGE_EMULATOR_HOST, fsspec's FSSPEC_* config), exactly as users point
ckpttool at MinIO or an emulator.

    python tests/remote_servers.py s3|gs   # serve until stdin closes
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field

BUCKET = "ckpt-bucket"
_SETTLE_MARKER = f"/{BUCKET}/settle-"  # the path of Server.settled_log's marker requests, a uuid after it


@dataclass
class Server:
    protocol: str  # "s3" | "gs"
    endpoint: str  # http://127.0.0.1:PORT
    env: dict[str, str]
    stop: callable = field(repr=False, default=None)
    # The requests answered so far, when started with count_requests (the benchmarks report them),
    # and their request lines in order (`POST /bucket?delete HTTP/1.1`).
    requests: callable = field(repr=False, default=None)
    request_log: callable = field(repr=False, default=None)

    def url(self, *parts: str) -> str:
        return f"{self.protocol}://" + "/".join((BUCKET,) + parts)

    def settled_log(self) -> list[str]:
        """request_log() once every request answered so far is in it: a marker request is made and
        waited for (the log is read from the server's stderr by a thread); the markers left out,
        this call's and every earlier one's (so the lines between two calls are the requests made
        in between, and no earlier marker among them)."""
        import urllib.error
        import urllib.request
        import uuid

        marker = f"{_SETTLE_MARKER}{uuid.uuid4().hex}"
        try:
            urllib.request.urlopen(self.endpoint + marker, timeout=30).close()
        except urllib.error.HTTPError:
            pass  # unsigned: refused, and logged all the same
        while not any(marker in line for line in self.request_log()):
            threading.Event().wait(0.01)  # polling a readiness condition: the line is being read
        lines = self.request_log()
        return [line for line in lines if _SETTLE_MARKER not in line]


_S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
_REQUEST_LOG_MARKS = ('"GET ', '"PUT ', '"POST ', '"DELETE ', '"HEAD ')


def _start(kind: str, count_requests: bool = False) -> tuple[str, callable, callable]:
    """Start `python tests/remote_servers.py KIND`; its endpoint once it is ready, how to stop it,
    and the requests it has answered (from the one log line per request that the server writes on
    stderr, when `count_requests`; else None)."""
    proc = subprocess.Popen([sys.executable, __file__, kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE if count_requests else subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()  # blocks until the server listens (or the process died)
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"the {kind} test server did not start (exit {proc.wait()})")
    answered: list[str] = []  # the request lines, in the order the server answered them

    def count() -> None:
        for log_line in proc.stderr:
            if any(mark in log_line for mark in _REQUEST_LOG_MARKS):
                answered.append(log_line.partition('"')[2].partition('"')[0])  # `POST /bucket?delete HTTP/1.1`

    if count_requests:
        threading.Thread(target=count, daemon=True).start()

    def stop() -> None:
        proc.stdin.close()  # the server process exits when its stdin closes
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return f"http://127.0.0.1:{int(line.split()[1])}", stop, answered if count_requests else None


def start_s3(count_requests: bool = False) -> Server:
    endpoint, stop, answered = _start("s3", count_requests)
    requests = (lambda: len(answered)) if answered is not None else None
    return Server("s3", endpoint, {**_S3_ENV, "AWS_ENDPOINT_URL": endpoint}, stop, requests,
                  (lambda: list(answered)) if answered is not None else None)


def start_gcs() -> Server:
    endpoint, stop, _answered = _start("gs")
    env = {"STORAGE_EMULATOR_HOST": endpoint, "FSSPEC_GS_TOKEN": "anon", "FSSPEC_GS_PROJECT": "test",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    return Server("gs", endpoint, env, stop)


def _serve(kind: str) -> None:
    """Run one server in this process, with the test bucket, until stdin closes."""
    if kind == "s3":
        import boto3
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        port = server.get_host_and_port()[1]
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    else:
        import logging

        from gcp_storage_emulator.server import create_server

        logging.disable(logging.CRITICAL)
        server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=BUCKET)
        server.start()
        port = server._api._httpd.server_address[1]  # bound in create_server, serving once start() returns
    print(f"READY {port}", flush=True)
    sys.stdin.read()
    server.stop()


class CountingProxy:
    """A TCP relay to `target_port` counting the bytes sent back to clients."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.downstream_bytes = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.downstream_bytes = 0
            self.connections = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                if count:
                    with self._lock:
                        self.downstream_bytes += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


def upload_tree(server: Server, local_dir: str, *prefix: str) -> str:
    """Copy a local directory into the bucket under `prefix`; its URL."""
    from ckpttool.storage import remote
    fs = remote.filesystem(server.protocol)
    target = "/".join((BUCKET,) + prefix)
    for current, _dirs, files in os.walk(local_dir):
        for name in files:
            path = os.path.join(current, name)
            rel = os.path.relpath(path, local_dir).replace(os.sep, "/")
            with open(path, "rb") as handle:
                fs.pipe_file(f"{target}/{rel}", handle.read())
    return f"{server.protocol}://{target}"


if __name__ == "__main__":
    _serve(sys.argv[1])
