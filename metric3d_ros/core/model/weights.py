"""Where the Metric3D checkpoint comes from: explicit path, cache directory, or a verified download.

Resolution order of :func:`resolve_weights`:

1. ``path`` given: that file is used as is (it must exist; it is not hashed, so fine-tuned checkpoints work).
2. The cache directory (``cache_dir`` argument, else :func:`default_cache_dir`) holding the official file
   name, e.g. ``~/.cache/torch/metric3d/metric_depth_vit_small_800k.pth``. Its size must match the table.
3. ``download=True``: the official file is fetched from ``<base_url>/<file>`` into a temporary file inside
   the cache directory, with a text progress bar on stderr, and renamed to its final name (atomically) only
   after its size and sha256 match the table. A failed or altered download leaves nothing behind.

Default cache directory, first that applies:
``$METRIC3D_CACHE``; ``$TORCH_HOME/metric3d``; ``$XDG_CACHE_HOME/torch/metric3d``; ``~/.cache/torch/metric3d``
(the last three are where ``torch.hub`` keeps its files too).

This module imports no torch.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from metric3d_ros.core.model.specs import VARIANTS

DEFAULT_BASE_URL = 'https://huggingface.co/JUGGHM/Metric3D/resolve/main'
_CHUNK_BYTES = 1 << 20


class WeightsError(RuntimeError):
    """The checkpoint file could not be found, downloaded or verified."""


@dataclass(frozen=True)
class WeightFile:
    """One downloadable checkpoint: its file name, exact size and sha256 (lower-case hex)."""

    name: str
    size_bytes: int
    sha256: str


#: The official checkpoint of every variant, from the variant table (``metric3d_ros.core.model.specs``).
OFFICIAL_WEIGHTS: Mapping[str, WeightFile] = {
    spec.name: WeightFile(spec.checkpoint_file, spec.checkpoint_bytes, spec.checkpoint_sha256)
    for spec in VARIANTS.values()
}


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The cache directory: $METRIC3D_CACHE, $TORCH_HOME/metric3d, $XDG_CACHE_HOME/torch/metric3d,
    else ~/.cache/torch/metric3d. Empty variables count as unset."""
    env = os.environ if environ is None else environ
    if env.get('METRIC3D_CACHE'):
        return Path(env['METRIC3D_CACHE']).expanduser()
    if env.get('TORCH_HOME'):
        return Path(env['TORCH_HOME']).expanduser() / 'metric3d'
    if env.get('XDG_CACHE_HOME'):
        return Path(env['XDG_CACHE_HOME']).expanduser() / 'torch' / 'metric3d'
    return Path.home() / '.cache' / 'torch' / 'metric3d'


def resolve_weights(
    variant: str,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    base_url: str = DEFAULT_BASE_URL,
    progress: bool = True,
    table: Mapping[str, WeightFile] = OFFICIAL_WEIGHTS,
    timeout_s: float = 60.0,
) -> Path:
    """The local checkpoint file for ``variant`` (see the module docstring for the order).

    Raises WeightsError with the file name, the URL and the place to put the file when it cannot be had.
    """
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            what = 'is a directory, not a file' if explicit.is_dir() else 'does not exist'
            raise WeightsError(
                f'checkpoint path {explicit} {what}: pass the path of a Metric3D .pth file, or leave the '
                f'path unset to use the cache directory ({default_cache_dir()}) and the download')
        return explicit
    entry = _lookup(variant, table)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / entry.name
    url = f'{base_url.rstrip("/")}/{entry.name}'
    if target.is_file():
        found = target.stat().st_size
        if found != entry.size_bytes:
            raise WeightsError(
                f'cached checkpoint {target} has {found:,} bytes but {entry.name} has {entry.size_bytes:,}: '
                f'delete it (it will be downloaded again from {url}) or replace it with the right file')
        return target
    if not download:
        raise WeightsError(
            f'{entry.name} is not in the cache directory {cache} and download is disabled: download {url} '
            f'and place it at {target}, or pass the checkpoint path explicitly')
    return _download(entry, url, target, progress=progress, timeout_s=timeout_s)


def _lookup(variant: str, table: Mapping[str, WeightFile]) -> WeightFile:
    if variant not in table:
        raise WeightsError(f'unknown variant {variant!r}: use one of {", ".join(map(repr, table))}')
    return table[variant]


def _download(entry: WeightFile, url: str, target: Path, progress: bool, timeout_s: float) -> Path:
    """Fetch ``url`` into a temporary file next to ``target``; rename it only once size and sha256 match."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(
            f'cannot create the cache directory {target.parent} ({exc}): set METRIC3D_CACHE to a writable '
            'folder or pass cache_dir') from exc
    handle, tmp_name = tempfile.mkstemp(prefix=f'.{entry.name}.', suffix='.part', dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, 'wb') as out:
            digest, size = _fetch(entry, url, out, progress, timeout_s, target)
        if size != entry.size_bytes:
            raise WeightsError(
                f'download of {entry.name} from {url} has the wrong size: expected {entry.size_bytes:,} '
                f'bytes, got {size:,}; nothing was kept in {target.parent}. Retry, or download it by hand '
                f'and place it at {target}')
        if digest != entry.sha256:
            raise WeightsError(
                f'download of {entry.name} from {url} is corrupted: expected sha256 {entry.sha256}, got '
                f'{digest}; nothing was kept in {target.parent}. Retry, or download it by hand and place it '
                f'at {target}')
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache file is readable like any download
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _fetch(
    entry: WeightFile, url: str, out: BinaryIO, progress: bool, timeout_s: float, target: Path,
) -> tuple[str, int]:
    """Stream ``url`` into ``out``; returns (sha256 hex, bytes written)."""
    hasher = hashlib.sha256()
    size = 0
    bar = _Progress(entry.name, entry.size_bytes, sys.stderr) if progress else None
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            while True:
                chunk = response.read(_CHUNK_BYTES)
                if not chunk:
                    break
                hasher.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if size > entry.size_bytes:
                    break  # more than the file should have: stop; the size check reports it
                if bar is not None:
                    bar.update(size)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, 'reason', None) or exc
        raise WeightsError(
            f'cannot download {entry.name} from {url} ({reason}). Without network access, download it on '
            f'another machine and place it at {target} (or set METRIC3D_CACHE to the folder holding it, or '
            'pass the checkpoint path explicitly)') from exc
    finally:
        if bar is not None:
            bar.close(size)
    return hasher.hexdigest(), size


class _Progress:
    """A one-line text progress bar, redrawn at most every ``interval_s`` seconds."""

    def __init__(self, name: str, total_bytes: int, stream: TextIO, interval_s: float = 0.5) -> None:
        self._name = name
        self._total = max(total_bytes, 1)
        self._stream = stream
        self._interval_s = interval_s
        self._start = time.monotonic()
        self._last = float('-inf')

    def update(self, done_bytes: int) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._last = now
            self._draw(done_bytes, now)

    def close(self, done_bytes: int) -> None:
        self._draw(done_bytes, time.monotonic())
        self._stream.write('\n')
        self._stream.flush()

    def _draw(self, done_bytes: int, now: float) -> None:
        fraction = min(done_bytes / self._total, 1.0)
        filled = int(30 * fraction)
        rate_mb_s = done_bytes / max(now - self._start, 1e-6) / 1e6
        self._stream.write(
            f'\r{self._name}: [{"#" * filled}{"." * (30 - filled)}] {100 * fraction:5.1f}% '
            f'{done_bytes / 1e6:,.1f}/{self._total / 1e6:,.1f} MB {rate_mb_s:.1f} MB/s')
        self._stream.flush()
