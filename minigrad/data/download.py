"""Fetch files from a list of mirrors and keep only verified copies.

For each file: if a copy with the right checksum is already there, keep it.
Otherwise try each mirror in order, streaming into a temporary file in the
target folder while hashing; a copy whose checksum matches replaces the
target atomically, anything else (HTTP error, network error, wrong checksum)
is discarded and the next mirror is tried. Only when every mirror has failed
is a DataError raised, naming the file and what went wrong on each mirror.

Checksums are written "algorithm:hexdigest", e.g. "md5:9fb629c4...", with any
algorithm hashlib guarantees.
"""

import hashlib
import os
import urllib.error
import urllib.request

from ..atomic_file import atomic_write
from . import idx
from .idx import DataError

_CHUNK = 1 << 16


def fetch_verified(directory, names, base_urls, checksums, timeout=60.0):
    """Make sure ``directory`` holds each of ``names`` with its checksum.

    ``base_urls`` are tried in order; a file is fetched from
    ``base_url + name``. ``checksums`` maps every name to "algorithm:hex".
    Returns the list of file paths, in the order of ``names``.
    """
    base_urls = _check_base_urls(base_urls)
    expected = {name: parse_checksum(name, checksums.get(name)) for name in names}
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"expected a positive timeout in seconds, got {timeout!r}")
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name in names:
        path = os.path.join(directory, name)
        algorithm, digest = expected[name]
        if not (os.path.isfile(path) and file_digest(path, algorithm) == digest):
            _fetch_from_mirrors(name, path, base_urls, algorithm, digest, timeout)
        paths.append(path)
    return paths


def parse_checksum(name, checksum):
    """Split "algorithm:hexdigest" into (algorithm, lowercase hexdigest)."""
    algorithm, _, digest = str(checksum).partition(":")
    algorithm, digest = algorithm.lower(), digest.lower()
    if algorithm in hashlib.algorithms_guaranteed and not algorithm.startswith("shake_"):
        digest_size = hashlib.new(algorithm).digest_size
        if len(digest) == 2 * digest_size and all(c in "0123456789abcdef" for c in digest):
            return algorithm, digest
    raise ValueError(f"expected a checksum like 'sha256:<64 hex digits>' for {name}, got {checksum!r}")


def file_digest(path, algorithm):
    """Return the hex digest of the file at ``path``."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _check_base_urls(base_urls):
    # A bare string would otherwise be iterated character by character.
    if isinstance(base_urls, str) or not base_urls:
        raise ValueError(f"expected a non-empty sequence of base URLs, got {base_urls!r}")
    return list(base_urls)


def _fetch_from_mirrors(name, path, base_urls, algorithm, digest, timeout):
    failures = []
    for base_url in base_urls:
        url = base_url.rstrip("/") + "/" + name
        try:
            _fetch(url, path, algorithm, digest, timeout)
            return
        except (OSError, DataError) as e:  # URLError, HTTPError and timeouts are OSErrors
            failures.append(f"{url}: {_describe(e)}")
    raise DataError(f"{name}: download failed from every mirror: " + "; ".join(failures))


def _fetch(url, path, algorithm, digest, timeout):
    hasher, size = hashlib.new(algorithm), 0
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_write(path) as f:
        for chunk in iter(lambda: response.read(_CHUNK), b""):
            size += len(chunk)
            if size > idx.MAX_BYTES:  # a mirror that never stops must not fill the disk
                raise DataError(f"expected at most {idx.MAX_BYTES} bytes, got more")
            hasher.update(chunk)
            f.write(chunk)
        got = hasher.hexdigest()
        if got != digest:
            # Raised inside atomic_write, so the partial file is removed.
            raise DataError(f"expected {algorithm} {digest}, got {got}")


def _describe(error):
    if isinstance(error, urllib.error.HTTPError):
        text = f"HTTP {error.code} {error.reason}"
    elif isinstance(error, urllib.error.URLError):
        text = str(error.reason)
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())
