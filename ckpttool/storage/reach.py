"""Before an object store's backend is created: is its endpoint reachable at all,
and are the backends' own loggers kept off stderr?

gcsfs retries a refused connection six times with backoff (about a minute per
call, several calls per command) and logs a traceback at each give-up; a user
without network or with a mistyped emulator address wants one line in seconds.
So one TCP connection to the endpoint is tried first (a few seconds at most),
and a failure names the endpoint, where it came from and the credentials the
backend would use. Backend loggers are silenced unless --debug (or
CKPTTOOL_DEBUG=1) asks for them. Standard library only.
"""
from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlsplit

from ckpttool.errors import BadInput, debug_output

CONNECT_TIMEOUT = 5.0
BACKEND_LOGGERS = ("gcsfs", "s3fs", "fsspec", "aiobotocore", "botocore", "google.auth", "google_auth_httplib2",
                   "urllib3", "aiohttp")
_reached: set[str] = set()


def quiet_backend_loggers() -> None:
    """Backend loggers print to stderr through logging's last resort when nothing is configured:
    give them a handler that drops everything, unless debugging."""
    show = debug_output["on"] or os.environ.get("CKPTTOOL_DEBUG", "") not in ("", "0")
    for name in BACKEND_LOGGERS:
        logger = logging.getLogger(name)
        if show:
            logger.propagate = True
            logger.handlers = [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]
        else:
            if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
                logger.addHandler(logging.NullHandler())
            logger.propagate = False


def _option(options: dict, *keys: str):
    for key in keys:
        value = options.get(key)
        if isinstance(value, str) and value:
            return value
    client = options.get("client_kwargs")
    if isinstance(client, dict) and isinstance(client.get("endpoint_url"), str):
        return client["endpoint_url"]
    return None


def endpoint_of(protocol: str, options: dict) -> tuple[str, str, str] | None:
    """(endpoint URL, where it came from, credentials the backend will try), or None when unknown."""
    if protocol in ("gs", "gcs"):
        given = _option(options, "endpoint_url")
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if given:
            where = "--storage-option endpoint_url"
        elif emulator:
            given, where = emulator, "STORAGE_EMULATOR_HOST"
        else:
            given, where = "https://storage.googleapis.com", "Google Cloud Storage"
        token = options.get("token")
        credentials = (f"token={token}" if isinstance(token, str) else "the token storage option" if token
                       else "anonymous (emulator)" if emulator and not options.get("endpoint_url")
                       else f"GOOGLE_APPLICATION_CREDENTIALS={os.environ['GOOGLE_APPLICATION_CREDENTIALS']}"
                       if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
                       else "application default credentials (gcloud auth application-default login)")
        return given if "://" in given else f"http://{given}", where, credentials
    if protocol in ("s3", "s3a"):
        given = _option(options, "endpoint_url")
        env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") \
            or os.environ.get("FSSPEC_S3_ENDPOINT_URL")
        if given:
            where = "--storage-option endpoint_url"
        elif env:
            given, where = env, "AWS_ENDPOINT_URL"
        else:
            return None  # AWS's own endpoints depend on the region: botocore's chain decides
        credentials = ("anonymous (anon=true)" if options.get("anon") else
                       "AWS_ACCESS_KEY_ID" if os.environ.get("AWS_ACCESS_KEY_ID") else
                       f"profile {os.environ['AWS_PROFILE']}" if os.environ.get("AWS_PROFILE") else
                       "the AWS credential chain (env, ~/.aws, instance role)")
        return given, where, credentials
    return None


def check_reachable(protocol: str, options: dict) -> None:
    """One TCP connection to the store's endpoint (once per process): BadInput naming the endpoint,
    its source and the credentials when nothing answers."""
    found = endpoint_of(protocol, options)
    if found is None:
        return
    endpoint, where, credentials = found
    if endpoint in _reached:
        return
    parts = urlsplit(endpoint)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadInput(f"bad {protocol}:// endpoint {endpoint} (from {where})") from None
    if not parts.hostname:
        raise BadInput(f"bad {protocol}:// endpoint {endpoint} (from {where})")
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise BadInput(f"cannot reach the {protocol}:// endpoint {endpoint} (from {where}): {reason}; "
                       f"credentials: {credentials}",
                       hint="check the network, the endpoint (STORAGE_EMULATOR_HOST, AWS_ENDPOINT_URL, "
                            "--storage-option endpoint_url=...) and the credentials") from None
    _reached.add(endpoint)
