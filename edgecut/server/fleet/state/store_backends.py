"""Which store a URL names: a backend per scheme, `open_store(url)` the one entry point.

Here rather than in store.py so the base module does not import its own subclasses; a new backend
registers its scheme in `STORE_BACKENDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from edgecut.errors import ConfigError
from edgecut.server.fleet.state.store import LocalStore, Store


def _local(url: str) -> Store:
    parsed = urlparse(url)
    return LocalStore(Path(parsed.path if parsed.scheme == "file" else url))


def _s3(url: str) -> Store:
    from edgecut.server.fleet.state.store_s3 import S3Store  # boto3 loads only for s3:// URLs

    return S3Store.from_url(url)


# scheme -> factory
STORE_BACKENDS: dict[str, Callable[[str], Store]] = {"file": _local, "": _local, "s3": _s3}


def open_store(url: str) -> Store:
    """A store from `file:///dir`, a plain directory path, or a URL whose scheme a backend registered."""
    scheme = urlparse(url).scheme
    factory = STORE_BACKENDS.get(scheme)
    if factory is None:
        known = ", ".join(sorted(s for s in STORE_BACKENDS if s)) or "file"
        raise ConfigError(f"store URL {url!r}: no backend for scheme {scheme!r} (available: {known})")
    return factory(url)
