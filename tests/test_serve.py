"""`gstalk serve`: the WebSocket protocol in-process, and the page in a real (headless) Chromium.

The browser tests use Debian's Chromium (``/usr/bin/chromium``) driven by Playwright, with Chromium's fake
microphone playing a speech file; they skip with the reason when either is missing. A screenshot of the
page is kept in the test's tmp folder.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from gstalk.config import AudioMotionConfig, ServeConfig, TrainConfig
from gstalk.demo import speech_like_audio
from gstalk.train import train

from .pages import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run(demo_dataset: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "avatar"
    return train(
        TrainConfig(
            dataset=demo_dataset, out=out, size=64, max_gaussians=800, iterations=(40, 80, 10),
            progress=False, audio_motion=AudioMotionConfig(steps=300, augmented_copies=1),
        )
    )  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the protocol, in-process -----------------------------------------------------------------------------
def test_a_session_streams_frames_for_its_audio_and_offers_the_mp4(run: Path, tmp_path: Path):
    from aiohttp.test_utils import TestClient, TestServer

    from gstalk.serve import LocalWorker, Server

    config = ServeConfig(run=(run,), size=64, max_sessions=1, max_session_seconds=2.0)
    speech = speech_like_audio(3.0, seed=4).audio

    async def scenario():
        server = Server(config, LocalWorker.from_config(config))
        async with TestClient(TestServer(server.app())) as client:
            info = await (await client.get("/avatars")).json()
            assert info["avatars"] == ["avatar"] and info["size"] == 64
            ws = await client.ws_connect("/ws")
            await ws.send_json({"type": "start", "avatar": "nobody"})
            assert (await ws.receive_json())["type"] == "error"
            await ws.send_json({"type": "start", "avatar": "avatar"})
            ready = await ws.receive_json()
            assert ready["type"] == "ready" and ready["lookahead"] > 0
            busy = await client.ws_connect("/ws")  # one session at a time here
            await busy.send_json({"type": "start", "avatar": "avatar"})
            assert "busy" in (await busy.receive_json())["message"]
            await busy.close()
            for start in range(0, len(speech), 320):  # 20 ms chunks, as the page sends them
                await ws.send_bytes(speech[start : start + 320].astype(np.float32).tobytes())
            await ws.send_json({"type": "end"})
            indices, messages = [], []
            while True:
                msg = await ws.receive(timeout=60)
                if msg.type.name == "BINARY":
                    index, _ = struct.unpack("<If", msg.data[:8])
                    assert msg.data[8:10] == b"\xff\xd8"  # a JPEG
                    indices.append(index)
                else:
                    messages.append(json.loads(msg.data))
                    if messages[-1]["type"] == "end":
                        break
            assert any(m["type"] == "limit" for m in messages)  # 3 s sent, 2 s allowed
            end = messages[-1]
            # 2 s at 25 fps: every frame was delivered, or dropped (late, or not taken in time) and counted
            assert indices == sorted(indices) and indices[-1] == 49
            assert len(indices) + end["dropped"] == 50
            first = indices[0]
            video = await client.get(end["download"])
            assert video.status == 200
            path = tmp_path / "session.mp4"
            path.write_bytes(await video.read())
            assert (await client.get("/download/not-a-session")).status == 404
            await ws.close()
        import av

        with av.open(str(path)) as f:
            assert 50 - first <= f.streams.video[0].frames <= 50 and f.streams.audio  # in step with the audio

    asyncio.run(scenario())


def test_a_client_that_disconnects_frees_its_session(run: Path):
    from aiohttp.test_utils import TestClient, TestServer

    from gstalk.serve import LocalWorker, Server

    config = ServeConfig(run=(run,), size=64, max_sessions=1)

    async def scenario():
        server = Server(config, LocalWorker.from_config(config))
        async with TestClient(TestServer(server.app())) as client:
            ws = await client.ws_connect("/ws")
            await ws.send_json({"type": "start", "avatar": "avatar"})
            await ws.receive_json()
            await ws.send_bytes(speech_like_audio(1.5).audio.astype(np.float32).tobytes())
            await ws.close()  # gone mid-session
            for _ in range(50):
                if not server.live:
                    break
                await asyncio.sleep(0.1)
            assert not server.live and not server.finished
            again = await client.ws_connect("/ws")  # its slot is free again
            await again.send_json({"type": "start", "avatar": "avatar"})
            assert (await again.receive_json())["type"] == "ready"
            await again.close()

    asyncio.run(scenario())


# --- the page, in Chromium ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(run: Path, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("needs Chromium (Debian: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[dev]')")
    port = _port()
    # a still pose: the only motion on the page is what the audio drives
    cmd = [sys.executable, "-m", "gstalk", "serve", "--run", str(run), "--port", str(port),
           "--size", "64", "--pose", "still", "--still-frame", "40"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "GSTALK_THREADS": "1"})  # fmt: skip
    line = proc.stdout.readline()
    assert "gstalk serve:" in line, proc.stderr.read()
    yield f"http://127.0.0.1:{port}/"
    proc.terminate()
    proc.wait(timeout=20)


def _browser(playwright, wav: Path):
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
              "--no-sandbox"],
    )  # fmt: skip


MOUTH_SAMPLE = """() => {
  const c = document.getElementById('view');
  const g = c.getContext('2d');
  const d = g.getImageData(c.width * 0.3, c.height * 0.55, c.width * 0.4, c.height * 0.3).data;
  const out = [];
  for (let i = 0; i < d.length; i += 4) out.push((d[i] + d[i + 1] + d[i + 2]) / 3);
  return out;
}"""


def _mouth_motion(page, samples: int = 24) -> float:
    """Mean change of the mouth region's pixels between samples 0.12 s apart."""
    frames = []
    for _ in range(samples):
        frames.append(np.array(page.evaluate(MOUTH_SAMPLE), float))
        page.wait_for_timeout(120)
    return float(np.mean([np.abs(a - b).mean() for a, b in itertools.pairwise(frames)]))


def _speak(page, url: str) -> None:
    page.goto(url)
    wait_until(page, "document.getElementById('avatar').options.length > 0")
    page.click("#mic")
    wait_until(page, "window.gstalkStats.frames > 25")


def test_the_page_talks_with_the_microphone(server: str, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    speech, silence = tmp_path / "speech.wav", tmp_path / "silence.wav"
    soundfile.write(speech, speech_like_audio(6.0, seed=8).audio, 16_000, subtype="PCM_16")
    soundfile.write(silence, np.zeros(6 * 16_000, np.float32), 16_000, subtype="PCM_16")
    with sync_playwright() as p:
        browser = _browser(p, silence)
        page = browser.new_page()
        _speak(page, server)
        still = _mouth_motion(page)
        browser.close()

        browser = _browser(p, speech)
        page = browser.new_page()
        _speak(page, server)
        moving = _mouth_motion(page)
        stats = page.evaluate("window.gstalkStats")
        assert stats["p95"] == stats["p95"] and 0 < stats["p95"] < 2.0, stats  # measured and reported
        assert "latency p50" in page.inner_text("#stats")
        page.screenshot(path=str(tmp_path / "serve.png"))  # artifacts of the run, beside the measures
        (tmp_path / "serve.json").write_text(
            json.dumps({"mouth_change_speech": moving, "mouth_change_silence": still, "stats": stats})
        )
        # the mouth moves with speech, not with silence: well above silence's floor (JPEG, the stream's
        # own small changes), by a ratio and by a margin (0.77 against 0.14 on one clean clone)
        assert moving > max(3 * still, still + 0.4), (moving, still)

        page.reload()  # the page survives a reload: a new session starts and talks
        _speak(page, server)
        page.close()  # and a disconnect frees the session
        check = browser.new_page()
        check.goto(server)
        deadline = time.time() + 10
        while (
            check.evaluate("fetch('/avatars').then(r => r.json())")["live_sessions"]
            and time.time() < deadline
        ):
            time.sleep(0.3)
        assert check.evaluate("fetch('/avatars').then(r => r.json())")["live_sessions"] == 0
        browser.close()


# --- only invited visitors: Host, Origin, token, rate limit, TLS --------------------------------------------
def _self_signed(folder: Path, name: str = "cert") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    certfile, keyfile = folder / f"{name}.pem", folder / f"{name}.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    return certfile, keyfile


async def _frames_after_start(ws, seconds: float = 1.5, seed: int = 2) -> int:
    """Start a session on ``ws``, send ``seconds`` of speech and the end; the frames received."""
    await ws.send_json({"type": "start", "avatar": "avatar"})
    ready = await ws.receive_json(timeout=30)
    assert ready["type"] == "ready", ready
    return await _frames_after_start_ready(ws, seconds, seed)


async def _frames_after_start_ready(ws, seconds: float = 1.5, seed: int = 2) -> int:
    """On a session that is ready: send ``seconds`` of speech and the end; the frames received."""
    speech = speech_like_audio(seconds, seed=seed).audio.astype(np.float32)
    for start in range(0, len(speech), 8000):  # 0.5 s per message (at most 1 s is accepted)
        await ws.send_bytes(speech[start : start + 8000].tobytes())
    await ws.send_json({"type": "end"})
    frames = 0
    while True:
        msg = await ws.receive(timeout=60)
        if msg.type.name == "BINARY":
            frames += 1
            continue
        assert msg.type.name == "TEXT", (msg, frames)
        if json.loads(msg.data)["type"] == "end":
            return frames


def test_foreign_hosts_and_origins_are_refused_on_every_route(run: Path):
    """Loopback (no token): a foreign Host (DNS rebinding) gets 403 on every route; a foreign Origin gets
    403 and no frames on the WebSocket; the served origin, loopback names and listed names get in."""
    import aiohttp
    from aiohttp.test_utils import TestClient, TestServer

    from gstalk.serve import LocalWorker, Server
    from gstalk.serve.access import access_for

    config = ServeConfig(run=(run,), size=64, allow_host=("kiosk.example",),
                         allow_origin=("https://app.example",), rate_burst=1000)  # fmt: skip
    access, generated = access_for(config)
    assert access.token is None and not generated  # loopback: no token unless given

    async def scenario():
        server = Server(config, LocalWorker.from_config(config), access)
        async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
            port = client.port
            routes = ["/", "/avatars", "/download/anything", "/ws"]
            for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}",
                         f"localhost:{port + 1}", "", "a b", f"user@127.0.0.1:{port}"):  # fmt: skip
                for route in routes:
                    r = await client.get(route, headers={"Host": host})
                    assert r.status == 403, (host, route, r.status)
                    assert "avatar" not in await r.text()
            foreign = ("http://evil.example", f"http://evil.example:{port}", "null",
                       f"https://127.0.0.1:{port}.evil.example", f"http://127.0.0.1:{port + 1}")  # fmt: skip
            for origin in foreign:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await client.ws_connect("/ws", headers={"Origin": origin})
                assert refused.value.status == 403, origin
                assert (await client.get("/avatars", headers={"Origin": origin})).status == 403
            # DNS rebinding: the attacker's page is same-origin with its own name, which is not served
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await client.ws_connect("/ws", headers={"Host": f"evil.example:{port}",
                                                        "Origin": f"http://evil.example:{port}"})  # fmt: skip
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST.:{port}", "kiosk.example"):
                r = await client.get("/avatars", headers={"Host": host})
                assert r.status == 200, host
            for host, origin in ((f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"),
                                 (f"localhost:{port}", f"http://localhost:{port}"),
                                 (f"127.0.0.1:{port}", "https://app.example")):  # fmt: skip
                ws = await client.ws_connect("/ws", headers={"Host": host, "Origin": origin})
                await ws.send_json({"type": "start", "avatar": "avatar"})
                assert (await ws.receive_json())["type"] == "ready", (host, origin)
                await ws.close()
            ws = await client.ws_connect("/ws")  # a script: no Origin at all
            assert await _frames_after_start(ws) > 0
            await ws.close()

    asyncio.run(scenario())


def test_off_loopback_a_token_is_required_then_kept_in_a_cookie(run: Path):
    """A non-loopback --host generates a token: without it 401, with a wrong one 403 (no page data, no
    frames); the token in the URL once sets an HttpOnly SameSite=Strict cookie and redirects; the cookie,
    or a Bearer header, then gets the page, the avatars and frames."""
    import aiohttp
    from aiohttp.test_utils import TestClient, TestServer

    from gstalk.serve import LocalWorker, Server
    from gstalk.serve.access import access_for

    config = ServeConfig(run=(run,), size=64, host="0.0.0.0", port=8123, rate_burst=1000)
    access, generated = access_for(config)
    token = access.token
    assert generated and token and len(token) >= 32
    assert access_for(config)[0].token != token  # a new one every start
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")

    async def scenario():
        server = Server(config, LocalWorker.from_config(config), access)
        async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
            for route in ("/", "/avatars", "/download/x", "/ws"):
                assert (await client.get(route)).status == 401, route
                for credentials in ({"params": {"token": wrong}}, {"params": {"token": token[:8]}},
                                    {"headers": {"Cookie": f"{access.cookie}={wrong}"}},
                                    {"headers": {"Authorization": f"Bearer {wrong}"}}):  # fmt: skip
                    r = await client.get(route, **credentials)
                    assert r.status in (401, 403) and "avatars" not in await r.text(), (route, credentials)
            for headers in ({}, {"Cookie": f"{access.cookie}={wrong}"}):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await client.ws_connect("/ws", headers=headers)
                assert refused.value.status in (401, 403)
            first = await client.get("/", params={"token": token}, allow_redirects=False)
            assert first.status == 303 and first.headers["Location"] == "/"
            cookie = first.headers["Set-Cookie"]
            assert f"{access.cookie}={token}" in cookie
            assert all(flag in cookie for flag in ("HttpOnly", "SameSite=Strict", "Path=/"))
            with_cookie = {"Cookie": f"{access.cookie}={token}"}
            page = await client.get("/", headers=with_cookie)
            assert page.status == 200 and "gstalk live" in await page.text()
            assert (await client.get("/avatars", headers=with_cookie)).status == 200
            assert (await client.get("/avatars", headers={"Authorization": f"Bearer {token}"})).status == 200
            ws = await client.ws_connect("/ws", headers=with_cookie)
            assert await _frames_after_start(ws) > 0
            await ws.close()

    asyncio.run(scenario())


def test_operator_tokens_and_their_errors(tmp_path: Path, monkeypatch):
    from gstalk.errors import GstalkError
    from gstalk.serve.access import TOKEN_ENV, access_for, read_token

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    secret = "s3cret-token-for-the-kiosk-0123"
    (tmp_path / "token").write_text(secret + "\n")
    assert read_token(ServeConfig(token_file=tmp_path / "token")) == secret
    assert access_for(ServeConfig(host="10.0.0.5", token_file=tmp_path / "token"))[0].token == secret
    monkeypatch.setenv(TOKEN_ENV, secret)
    access, generated = access_for(ServeConfig(host="0.0.0.0"))
    assert access.token == secret and not generated
    assert access_for(ServeConfig())[0].token == secret  # given: asked on loopback too
    monkeypatch.delenv(TOKEN_ENV)
    for bad, words in ((ServeConfig(token="short"), "too short"),
                       (ServeConfig(token=secret, token_file=tmp_path / "token"), "both"),
                       (ServeConfig(token_file=tmp_path / "missing"), "cannot read"),
                       (ServeConfig(allow_host=("a/b",)), "not a host"),
                       (ServeConfig(allow_origin=("example.org",)), "not an origin")):  # fmt: skip
        with pytest.raises(GstalkError, match=words):
            access_for(bad)


def test_connection_attempts_per_address_are_limited(run: Path):
    from aiohttp.test_utils import TestClient, TestServer

    from gstalk.serve import LocalWorker, Server
    from gstalk.serve.access import RateLimiter, access_for

    config = ServeConfig(run=(run,), size=64, rate_burst=4, rate_per_minute=1.0)

    async def scenario():
        server = Server(config, LocalWorker.from_config(config), access_for(config)[0])
        async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
            statuses = [(await client.get("/avatars")).status for _ in range(6)]
            assert statuses == [200] * 4 + [429] * 2
            r = await client.get("/ws")
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1

    asyncio.run(scenario())
    now = [0.0]
    limiter = RateLimiter(2, 60.0, clock=lambda: now[0])  # one request a second after a burst of 2
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert limiter.allow("b")  # another address has its own bucket
    now[0] = 1.0
    assert limiter.allow("a") and not limiter.allow("a")
    now[0] = 100.0
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]  # refilled up to the burst only


def test_host_and_origin_syntax():
    from gstalk.serve.access import is_loopback, normalize_origin, split_host

    assert split_host("LocalHost.:8000") == ("localhost", 8000)
    assert split_host("[::1]:80") == ("[::1]", 80) and split_host("[::1]") == ("[::1]", None)
    for bad in ("", "a:b", "[::1", "x:80:90", "::1", "evil.example/x", "a@b:1"):
        assert split_host(bad) is None, bad
    assert normalize_origin("HTTP://Example.org:80") == "http://example.org"
    assert normalize_origin("https://example.org:8443/") == "https://example.org:8443"
    for bad in ("null", "file://", "ftp://example.org", "https://example.org/path", "example.org"):
        assert normalize_origin(bad) is None, bad
    assert (
        is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    )
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("localhost.evil")


def test_tls_serves_https_and_wss_with_the_token(run: Path, tmp_path: Path):
    """`gstalk serve --certfile --keyfile --token-file`: the page over https (the URL printed says so),
    the token once, then frames over wss; plain http on the same port gets nothing."""
    import ssl
    import urllib.request

    import aiohttp

    certfile, keyfile = _self_signed(tmp_path)
    (tmp_path / "token").write_text("operator-token-0123456789abcdef")
    port = _port()
    cmd = [sys.executable, "-m", "gstalk", "serve", "--run", str(run), "--port", str(port), "--size", "64",
           "--certfile", str(certfile), "--keyfile", str(keyfile),
           "--token-file", str(tmp_path / "token")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "GSTALK_TOKEN"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env, "GSTALK_THREADS": "1"})  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert f"https://127.0.0.1:{port}/?token=<the token you gave>" in line, proc.stderr.read()
        trust = ssl.create_default_context(cafile=str(certfile))

        async def scenario():
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                base = f"https://127.0.0.1:{port}"
                assert (await http.get(f"{base}/avatars", ssl=trust)).status == 401
                page = await http.get(f"{base}/?token=operator-token-0123456789abcdef", ssl=trust)
                assert page.status == 200 and "gstalk live" in await page.text()  # after the redirect
                assert "Secure" in page.history[0].headers["Set-Cookie"]
                ws = await http.ws_connect(f"wss://127.0.0.1:{port}/ws", ssl=trust,
                                           headers={"Origin": base})  # fmt: skip
                assert await _frames_after_start(ws) > 0
                await ws.close()

        asyncio.run(scenario())
        with pytest.raises(OSError):  # plain http to the TLS port: no answer of any kind
            urllib.request.urlopen(f"http://127.0.0.1:{port}/avatars", timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_tls_files_are_checked_with_clear_errors(tmp_path: Path):
    from gstalk.errors import GstalkError
    from gstalk.serve.tls import server_context

    certfile, keyfile = _self_signed(tmp_path, "a")
    _, other_key = _self_signed(tmp_path, "b")
    assert server_context(certfile, keyfile) is not None and server_context(None, None) is None
    (tmp_path / "both.pem").write_text(keyfile.read_text() + certfile.read_text())
    assert server_context(tmp_path / "both.pem", None) is not None  # the key inside the certificate file
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    for cert, key, words in ((tmp_path / "missing.pem", keyfile, "does not exist"),
                             (tmp_path, keyfile, "is not a file"),
                             (certfile, other_key, "does not belong"),
                             (tmp_path / "junk.pem", keyfile, "cannot load"),
                             (certfile, None, "cannot load"),  # the key is not in the certificate file
                             (None, keyfile, "without --certfile")):  # fmt: skip
        with pytest.raises(GstalkError, match=words):
            server_context(cert, key)


# --- render replicas on Ray Serve -------------------------------------------------------------------------
def test_replicas_are_ranked_by_room_and_a_session_stays_on_its_own():
    from gstalk.serve.routing import rank_replicas

    replicas = [("a", 0), ("b", 2), ("c", None), ("d", 1)]
    assert rank_replicas(replicas, None) == [["b"], ["d"], ["a"], ["c"]]  # most room first; unknown last
    assert rank_replicas(replicas, None, exclude=["b", "d"]) == [["a"], ["c"]]
    assert rank_replicas(replicas, None, exclude=["a", "b", "c", "d"]) == [["a", "b", "c", "d"]]
    assert rank_replicas(replicas, "a") == [["a"]]  # pinned, though it has no room for new sessions
    assert rank_replicas(replicas, "gone") == [["a", "b", "c", "d"]]  # any: it will say the session is gone


async def _stream(ws, speech: np.ndarray, log: dict, stop: asyncio.Event) -> None:
    """Send ``speech`` at real-time pace in 0.1 s messages until ``stop``; then the end."""
    for start in range(0, len(speech), 1600):
        if stop.is_set() or ws.closed:
            break
        await ws.send_bytes(speech[start : start + 1600].tobytes())
        await asyncio.sleep(0.1)
    if not ws.closed:
        await ws.send_json({"type": "end"})


async def _receive(ws, log: dict) -> None:
    """Count frames (with the time each arrived) and keep every message until the connection closes."""
    async for msg in ws:
        if msg.type.name == "BINARY":
            log["frames"].append(time.monotonic())
        else:
            data = json.loads(msg.data)
            if data["type"] != "stats":
                log["messages"].append(data)
            if data["type"] == "end":
                return


def test_a_ray_address_nobody_answers_is_an_error_at_once():
    """``--ray HOST:PORT`` with no head there fails within the timeout (ray.init alone retries for
    minutes); a listening port passes the check."""
    from gstalk.errors import GstalkError
    from gstalk.serve.cluster import check_reachable

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_reachable(f"127.0.0.1:{listening.getsockname()[1]}")
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]  # bound, not listening: connections are refused
            start = time.monotonic()
            with pytest.raises(GstalkError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
                check_reachable(f"127.0.0.1:{port}", timeout=2.0)
            assert time.monotonic() - start < 3.0
    check_reachable("auto")  # left to Ray


def test_ray_sessions_stick_to_replicas_and_survive_one_dying(run: Path):
    """A local Ray cluster (head on loopback, started here): 2 replicas of 1 CPU, 1 session each. Two
    sessions land on different replicas; a third is told "busy". Killing one replica's process ends only
    its session, with the message; the other keeps receiving frames and ends normally; Serve replaces the
    dead replica, and a new session then renders there."""
    import importlib.util
    import signal

    if importlib.util.find_spec("ray") is None:
        pytest.skip("needs Ray Serve: pip install -e '.[ray]' (the dev extra includes it)")
    from aiohttp.test_utils import TestClient, TestServer

    from gstalk.serve import Server
    from gstalk.serve.cluster import STOPPED, RayWorker

    config = ServeConfig(run=(run,), size=64, max_sessions=1, ray="local", replicas=2, replica_cpus=1.0)
    worker = RayWorker.start(config)
    speech = speech_like_audio(30.0, seed=5).audio.astype(np.float32)

    async def start(client):
        ws = await client.ws_connect("/ws")
        await ws.send_json({"type": "start", "avatar": "avatar"})
        return ws, await ws.receive_json(timeout=30)

    async def scenario():
        server = Server(config, worker)
        async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
            (ws_a, ready_a), (ws_b, ready_b) = await start(client), await start(client)
            assert ready_a["type"] == ready_b["type"] == "ready", (ready_a, ready_b)
            (replica_a, pid_a), (replica_b, pid_b) = (
                worker.placement[r["session"]] for r in (ready_a, ready_b)
            )
            assert replica_a != replica_b and pid_a != pid_b  # each replica took one: its cap is 1
            ws_c, busy = await start(client)
            assert busy["type"] == "error" and "busy" in busy["message"]  # only now: every replica is full
            await ws_c.close()

            logs = {k: {"frames": [], "messages": []} for k in "ab"}
            stop_b = asyncio.Event()
            tasks = [asyncio.create_task(c) for c in (
                _stream(ws_a, speech, logs["a"], asyncio.Event()), _receive(ws_a, logs["a"]),
                _stream(ws_b, speech, logs["b"], stop_b), _receive(ws_b, logs["b"]))]  # fmt: skip
            deadline = time.monotonic() + 60
            while (
                min(len(logs["a"]["frames"]), len(logs["b"]["frames"])) < 10 and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.05)
            assert len(logs["a"]["frames"]) >= 10 and len(logs["b"]["frames"]) >= 10
            os.kill(pid_a, signal.SIGKILL)
            killed_at = time.monotonic()
            await asyncio.wait_for(tasks[1], 30)  # a's connection ends, with the message
            assert logs["a"]["messages"] == [{"type": "error", "message": STOPPED}]
            assert ws_a.closed
            while sum(t > killed_at for t in logs["b"]["frames"]) < 25 and time.monotonic() < killed_at + 60:
                await asyncio.sleep(0.1)
            assert sum(t > killed_at for t in logs["b"]["frames"]) >= 25  # b went on: 1 s of frames, and more
            stop_b.set()
            await asyncio.wait_for(tasks[3], 60)
            end = logs["b"]["messages"][-1]
            assert end["type"] == "end" and "error" not in [m["type"] for m in logs["b"]["messages"]]
            assert (await client.get(end["download"])).status == 200

            ws_d, ready_d = await start(client)  # b's replica takes it (the only one with room)
            assert ready_d["type"] == "ready" and worker.placement[ready_d["session"]][0] == replica_b
            # keep reading d, so the client answers the server's heartbeat pings while Serve replaces the
            # dead replica (an unread socket is closed after the heartbeat, which would free b's replica)
            tasks.append(asyncio.create_task(_receive(ws_d, {"frames": [], "messages": []})))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # until Serve has replaced the dead replica
                ws_e, ready_e = await start(client)
                if ready_e["type"] == "ready":
                    break
                await ws_e.close()
                await asyncio.sleep(1.0)
            assert ready_e["type"] == "ready", ready_e
            assert worker.placement[ready_e["session"]][0] not in (replica_a, replica_b)
            assert await _frames_after_start_ready(ws_e) > 0
            for ws in (ws_d, ws_e, ws_b):
                await ws.close()
            for task in tasks:
                task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(worker.stop())
