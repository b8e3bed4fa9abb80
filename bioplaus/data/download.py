"""Downloading data files with SHA-256 checks.

`download_fashion_mnist` fetches Fashion-MNIST from its upstream location and checks it
against known hashes. There is no such helper for MNIST or CIFAR-10, whose checksums we could
not verify offline: `download_file` with a SHA-256 you supply covers them.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import secrets
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from bioplaus.data.locate import data_home
from bioplaus.errors import ConfigError, DataError

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
"""Upstream location of the four gzipped Fashion-MNIST IDX files."""

# SHA-256 of the *decompressed* IDX payloads, measured on Debian's package files. Debian
# re-compresses the upstream gzip files, so the hashes of the .gz bytes differ between sources
# while the IDX payload is identical; hashing the payload accepts a good copy from either.
FASHION_MNIST_SHA256 = {
    # payload sizes: 47040016, 60008, 7840016 and 10008 bytes
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

_CHUNK = 1 << 20
_NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    ValueError,
)
_BAD_GZIP = (EOFError, gzip.BadGzipFile, zlib.error)


def _sha256(path: Path, decompressed: bool) -> str:
    """Hash a file's bytes, or its gunzipped payload (raising on a corrupt gzip stream)."""
    digest = hashlib.sha256()
    with gzip.open(path, "rb") if decompressed else path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(path: Path, sha256: str, decompressed: bool) -> bool:
    """Whether an existing file has the expected hash (a corrupt gzip file does not)."""
    try:
        return _sha256(path, decompressed) == sha256
    except _BAD_GZIP:
        return False


def _fetch(url: str, target: Path, timeout: float) -> str:
    """Stream ``url`` into the new file ``target``; return the SHA-256 of the bytes received."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, target.open("xb") as out:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except _NETWORK_ERRORS as exc:
        reason = exc if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", exc)
        raise DataError(
            f"Cannot download {url}: {reason}. Check the network connection, or install or copy the files by hand."
        ) from exc
    return digest.hexdigest()


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str,
    *,
    decompressed: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download a file and check its SHA-256 before moving it into place.

    The data is streamed into a temporary file next to ``dest``, hashed, and moved to ``dest``
    atomically only if the hash matches, so ``dest`` is never left half-written. If ``dest``
    already exists with the right hash, nothing is downloaded.

    Args:
        url: Where to download from.
        dest: The file to create (its folder is created if needed).
        sha256: The expected SHA-256, as 64 hexadecimal digits.
        decompressed: Check the hash of the gunzipped payload instead of the downloaded bytes,
            for files that different sources compress differently.
        timeout: Seconds to wait for the server before giving up.

    Returns:
        ``dest`` as a `Path`.

    Raises:
        ConfigError: If ``sha256`` is not 64 hexadecimal digits.
        DataError: If the download fails (the message names the URL and suggests checking the
            connection or installing the files by hand), if ``decompressed`` is set and the
            download is not valid gzip, or if the hash differs (the message names the URL, the
            expected and the actual hash; nothing is left on disk).
    """
    expected = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise ConfigError(f"download_file: sha256 must be 64 hexadecimal digits, got {sha256!r}")
    dest = Path(dest)
    if dest.is_file() and _matches(dest, expected, decompressed):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
    try:
        actual = _fetch(url, partial, timeout)
        if decompressed:
            try:
                actual = _sha256(partial, decompressed=True)
            except _BAD_GZIP as exc:
                raise DataError(f"Download of {url} is not a valid gzip file ({exc}); try again later.") from exc
        if actual != expected:
            what = "of the gunzipped payload " if decompressed else ""
            raise DataError(
                f"SHA-256 {what}mismatch for {url}: expected {expected}, got {actual}. "
                "The download was discarded; try again, or install or copy the files by hand."
            )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


def download_fashion_mnist(*, root: str | os.PathLike[str] | None = None, base_url: str = FASHION_MNIST_URL) -> Path:
    """Download the four gzipped Fashion-MNIST IDX files and verify them.

    Each file is checked against the SHA-256 of its decompressed IDX payload (see
    ``FASHION_MNIST_SHA256``), so a good copy passes whichever gzip settings produced it.
    Files already present with the right payload are not downloaded again.

    Args:
        root: Folder to download into. Defaults to ``data_home() / "fashion-mnist"``
            (``$BIOPLAUS_DATA/fashion-mnist`` or ``~/.cache/bioplaus/fashion-mnist``), where
            `load_fashion_mnist` finds it without arguments.
        base_url: Location of the files; ``<base_url>/<name>.gz`` is downloaded for each.

    Returns:
        The folder holding the files; pass it as ``root`` to `load_fashion_mnist`.

    Raises:
        DataError: If a download fails or a file's payload has the wrong hash.
    """
    folder = Path(root) if root is not None else data_home() / "fashion-mnist"
    for name, sha256 in FASHION_MNIST_SHA256.items():
        download_file(f"{base_url.rstrip('/')}/{name}.gz", folder / f"{name}.gz", sha256, decompressed=True)
    return folder
