"""Weight resolution: explicit path, cache directory conventions, verified download from a loopback server."""
from __future__ import annotations

import hashlib
import http.server
import io
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from metric3d_ros.core.model.specs import get_spec
from metric3d_ros.core.model.weights import (
    DEFAULT_BASE_URL,
    OFFICIAL_WEIGHTS,
    WeightFile,
    WeightsError,
    default_cache_dir,
    resolve_weights,
)

FILE_NAME = 'metric_depth_vit_small_800k.pth'


def _synthetic_checkpoint_bytes() -> bytes:
    """A small checkpoint written like the official files, with its own size and hash."""
    gen = torch.Generator().manual_seed(0)
    state = {'depth_model.encoder.cls_token': torch.randn(1, 1, 8, generator=gen),
             'depth_model.encoder.norm.weight': torch.randn(8, generator=gen)}
    buffer = io.BytesIO()
    torch.save({'model_state_dict': state}, buffer)
    return buffer.getvalue()


PAYLOAD = _synthetic_checkpoint_bytes()
TABLE = {'small': WeightFile(FILE_NAME, len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest())}


class _Server:
    """A loopback HTTP server on a random port serving ``/<FILE_NAME>``; ``mode`` alters what it sends."""

    def __init__(self) -> None:
        self.mode = 'good'
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                owner.requests.append(self.path)
                if self.path != f'/{FILE_NAME}':
                    self.send_error(404)
                    return
                body = PAYLOAD
                if owner.mode == 'corrupt':  # same length, one byte flipped
                    body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
                self.send_response(200)
                self.send_header('Content-Length', str(len(PAYLOAD)))
                self.end_headers()
                if owner.mode == 'truncated':  # announces the full length, sends half, hangs up
                    body = body[: len(body) // 2]
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.close()


def _resolve(cache: Path, server_url: str, **kwargs) -> Path:
    return resolve_weights('small', cache_dir=cache, base_url=server_url, table=TABLE, progress=False,
                           timeout_s=10.0, **kwargs)


def test_official_table_matches_the_issue():
    assert OFFICIAL_WEIGHTS['small'] == WeightFile(
        'metric_depth_vit_small_800k.pth', 150_120_967,
        'b34b2a2be9148054991cef7e417930e1320602ba7bc503b0ee4e7888543728f6')
    assert OFFICIAL_WEIGHTS['large'] == WeightFile(
        'metric_depth_vit_large_800k.pth', 1_647_972_663,
        '15328ffc42b528b95f188687418f6f03b3f123eb34ccdbd686c112abbea6d972')
    assert OFFICIAL_WEIGHTS['giant2'] == WeightFile(
        'metric_depth_vit_giant2_800k.pth', 5_510_989_187,
        '22d64c4dec098fa56eb17b6f22b1fb7d16b4742c66a9c8ee73e7dae61c0d2a1b')
    assert DEFAULT_BASE_URL == 'https://huggingface.co/JUGGHM/Metric3D/resolve/main'
    assert get_spec('vit_large').checkpoint_file == 'metric_depth_vit_large_800k.pth'  # the variant table


def test_download_lands_in_cache_and_second_call_uses_cache(tmp_path, server):
    cache = tmp_path / 'cache'
    got = _resolve(cache, server.url)
    assert got == cache / FILE_NAME
    assert got.read_bytes() == PAYLOAD
    assert server.requests == [f'/{FILE_NAME}']
    assert sorted(p.name for p in cache.iterdir()) == [FILE_NAME]  # no temporary file left
    assert _resolve(cache, server.url) == got
    assert server.requests == [f'/{FILE_NAME}'], 'second call must not touch the network'
    from metric3d_ros.core.model.checkpoint import read_checkpoint
    assert set(read_checkpoint(got)) == {'depth_model.encoder.cls_token', 'depth_model.encoder.norm.weight'}


def test_progress_bar_goes_to_stderr(tmp_path, server, capsys):
    resolve_weights('small', cache_dir=tmp_path, base_url=server.url, table=TABLE, progress=True)
    err = capsys.readouterr().err
    assert FILE_NAME in err and '100.0%' in err


def test_corrupted_download_is_rejected_and_leaves_nothing(tmp_path, server):
    server.mode = 'corrupt'
    with pytest.raises(WeightsError) as info:
        _resolve(tmp_path, server.url)
    msg = str(info.value)
    assert 'corrupted' in msg and TABLE['small'].sha256 in msg and FILE_NAME in msg
    assert hashlib.sha256(PAYLOAD).hexdigest() in msg
    assert list(tmp_path.iterdir()) == [], 'neither the file nor the temporary file may remain'


def test_truncated_download_is_rejected_and_leaves_nothing(tmp_path, server):
    server.mode = 'truncated'
    with pytest.raises(WeightsError) as info:
        _resolve(tmp_path, server.url)
    msg = str(info.value)
    assert FILE_NAME in msg and f'{len(PAYLOAD):,}' in msg
    assert list(tmp_path.iterdir()) == []


def test_offline_error_names_file_url_and_destination(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    url = f'http://127.0.0.1:{port}'
    with pytest.raises(WeightsError) as info:
        _resolve(tmp_path / 'cache', url)
    msg = str(info.value)
    assert f'{url}/{FILE_NAME}' in msg
    assert str(tmp_path / 'cache' / FILE_NAME) in msg
    assert not (tmp_path / 'cache' / FILE_NAME).exists()
    assert [p.name for p in (tmp_path / 'cache').iterdir()] == []


def test_http_404_is_reported(tmp_path, server):
    table = {'small': WeightFile('nope.pth', 1, '0' * 64)}
    with pytest.raises(WeightsError, match=r'cannot download nope\.pth .*Not Found'):
        resolve_weights('small', cache_dir=tmp_path, base_url=server.url, table=table, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_disabled_says_where_to_put_the_file(tmp_path, server):
    with pytest.raises(WeightsError) as info:
        _resolve(tmp_path, server.url, download=False)
    assert str(tmp_path / FILE_NAME) in str(info.value) and f'{server.url}/{FILE_NAME}' in str(info.value)
    assert server.requests == []


def test_cached_file_of_wrong_size_is_reported_not_replaced(tmp_path, server):
    (tmp_path / FILE_NAME).write_bytes(b'not a checkpoint')
    with pytest.raises(WeightsError, match='delete it'):
        _resolve(tmp_path, server.url)
    assert (tmp_path / FILE_NAME).read_bytes() == b'not a checkpoint'
    assert server.requests == []


def test_explicit_path_wins_and_must_exist(tmp_path, server):
    own = tmp_path / 'finetuned.pth'
    own.write_bytes(b'anything')
    assert _resolve(tmp_path / 'cache', server.url, path=own) == own
    assert server.requests == []
    missing = tmp_path / 'missing.pth'
    with pytest.raises(WeightsError, match=r'missing\.pth does not exist'):
        _resolve(tmp_path / 'cache', server.url, path=missing)
    with pytest.raises(WeightsError, match='is a directory'):
        _resolve(tmp_path / 'cache', server.url, path=tmp_path)


def test_unknown_variant(tmp_path):
    with pytest.raises(WeightsError, match="unknown variant 'base'.*'small', 'large', 'giant2'"):
        resolve_weights('base', cache_dir=tmp_path, download=False)


@pytest.mark.parametrize(('env', 'expected'), [
    ({'METRIC3D_CACHE': '/m', 'TORCH_HOME': '/t', 'XDG_CACHE_HOME': '/x'}, '/m'),
    ({'TORCH_HOME': '/t', 'XDG_CACHE_HOME': '/x'}, '/t/metric3d'),
    ({'METRIC3D_CACHE': '', 'TORCH_HOME': '/t'}, '/t/metric3d'),
    ({'XDG_CACHE_HOME': '/x'}, '/x/torch/metric3d'),
    ({'HOME': '/h'}, '/h/.cache/torch/metric3d'),
])
def test_cache_dir_precedence(monkeypatch, env, expected):
    for name in ('METRIC3D_CACHE', 'TORCH_HOME', 'XDG_CACHE_HOME'):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_cache_dir() == Path(expected)


def test_cache_env_var_is_used_by_resolve(tmp_path, server, monkeypatch):
    monkeypatch.delenv('METRIC3D_CACHE', raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    got = resolve_weights('small', base_url=server.url, table=TABLE, progress=False)
    assert got == tmp_path / 'th' / 'metric3d' / FILE_NAME and got.is_file()
    monkeypatch.setenv('METRIC3D_CACHE', str(tmp_path / 'm3d'))
    (tmp_path / 'm3d').mkdir()
    (tmp_path / 'm3d' / FILE_NAME).write_bytes(PAYLOAD)
    assert resolve_weights('small', base_url=server.url, table=TABLE, progress=False) == (
        tmp_path / 'm3d' / FILE_NAME)
    assert len(server.requests) == 1


def test_weights_module_does_not_import_torch():
    code = 'import sys, metric3d_ros.core.model.weights; print("torch" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'
