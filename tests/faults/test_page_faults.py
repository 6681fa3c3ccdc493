"""`metauas app` under a hostile client: a real server process (a tiny checkpoint whose
file name is markup), spoken to through raw sockets. The rules: same-origin requests
only; every malformed request is a 4xx with one line of JSON and one line in the log,
never a traceback; nothing is decoded before its pixels are counted (the peak memory
of the process is read from the kernel); 300 stalled connections hold no more threads
than one; a client that trickles bytes is cut; the page scores as the Python API."""

from __future__ import annotations

import base64
import html
import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from fault_helpers import CODE, REPO, clean_env, cli
from hostile import png_bomb, textured

pytest.importorskip("hypothesis", reason="the fuzz pass needs hypothesis (pip install -e '.[dev]')")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MARKUP = "<img src=x onerror=alert(1)>"
TIMEOUT = 2  # the server's --timeout: seconds a client has to send its request


@dataclass
class Page:
    port: int
    pid: int
    log: Path
    checkpoint: Path


@pytest.fixture(scope="module")
def page(tmp_path_factory, checkpoint):
    """`metauas app --method model` on a checkpoint named like markup, its log in a file."""
    folder = tmp_path_factory.mktemp("page")
    weights = shutil.copy(checkpoint, folder / f"{MARKUP}.pt")
    log = folder / "server.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-u",
                "-c",
                CODE,
                "app",
                "--method",
                "model",
                "--checkpoint",
                str(weights),
                "--size",
                "64",
                "--port",
                "0",
                "--device",
                "cpu",
                "--timeout",
                str(TIMEOUT),
            ],
            cwd=REPO,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise AssertionError(f"the app did not start: {line}{log.read_text()[-2000:]}")
    yield Page(int(line.split(" on ")[-1].split()[0].rstrip("/").rsplit(":", 1)[1]), proc.pid, log, Path(weights))
    proc.terminate()
    proc.wait(timeout=30)


def png(rgb: np.ndarray) -> str:
    return base64.b64encode(cv2.imencode(".png", rgb)[1].tobytes()).decode()


def body(normals: int = 2, query: str | None = None) -> bytes:
    rng = np.random.default_rng(0)
    files = lambda n, tag: [{"name": f"{tag}{i}.png", "data": png(textured(rng, 64))} for i in range(n)]  # noqa: E731
    return json.dumps(
        {
            "normals": files(normals, "normal"),
            "queries": [{"name": "q.png", "data": query}] if query else files(1, "query"),
        }
    ).encode()


def exchange(page: Page, raw: bytes) -> bytes:
    """Send bytes exactly as written; the whole answer, to the server's close."""
    with socket.create_connection(("127.0.0.1", page.port), timeout=120) as conn:
        conn.sendall(raw)
        answer = b""
        while chunk := conn.recv(1 << 16):
            answer += chunk
    return answer


OWN = "own"  # `host=OWN`: the Host header a browser on this page sends; None: no Host header


def request(page: Page, head: str, data: bytes = b"", host: str | None = OWN) -> tuple[int, dict, bytes]:
    """A request as written (`head`: request line and headers, Host added as `host`
    says): (status, headers, body) of the answer."""
    host = f"127.0.0.1:{page.port}" if host == OWN else host
    answer = exchange(page, f"{head}\r\n{'' if host is None else f'Host: {host}'}\r\n\r\n".encode() + data)
    top, _, payload = answer.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    return int(lines[0].split()[1]), {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}, payload


def post(page: Page, data: bytes, *headers: str, host: str | None = OWN) -> tuple[int, dict, bytes]:
    head = "\r\n".join(
        ["POST /segment HTTP/1.1", "Content-Type: application/json", f"Content-Length: {len(data)}", *headers]
    )
    return request(page, head, data, host)


def one_json_line(payload: bytes) -> str:
    """The error of a refused request: one line of JSON with an `error`."""
    assert payload.count(b"\n") == 0, payload[:300]
    return json.loads(payload)["error"]


def clean_log(page: Page) -> list[str]:
    """The server's log: one line per refusal, no traceback."""
    lines = page.log.read_text().splitlines()
    assert not any("Traceback" in line for line in lines), page.log.read_text()[-3000:]
    assert all(line.startswith("metauas app: ") for line in lines), lines  # no warning: it listens on 127.0.0.1
    return lines


def test_the_page_escapes_the_checkpoint_name_and_allows_only_its_own_script(page):
    status, headers, payload = request(page, "GET / HTTP/1.1")
    text = payload.decode()
    assert status == 200 and html.escape(MARKUP) in text and MARKUP not in text
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy and "unsafe" not in policy
    assert headers["x-frame-options"] == "DENY" and headers["server"] == "metauas"


def test_only_same_origin_json_requests_are_served(page):
    good = body()
    assert post(page, good)[0] == 200  # the refusals below are not of a broken request
    assert post(page, good, f"Origin: http://127.0.0.1:{page.port}", "Sec-Fetch-Site: same-origin")[0] == 200
    refused = {  # what a foreign web page, or a DNS name rebound to 127.0.0.1, can send
        "foreign Origin": post(page, good, "Origin: http://evil.example"),
        "null Origin": post(page, good, "Origin: null"),
        "cross-site fetch": post(page, good, "Sec-Fetch-Site: cross-site"),
        "rebound name": post(page, good, host=f"evil.example:{page.port}"),
        "rebound page": request(page, "GET / HTTP/1.1", host="evil.example"),
        "no Host": request(page, "GET / HTTP/1.0", host=None),
    }
    for what, (status, _, payload) in refused.items():
        assert status == 403, what
        one_json_line(payload)
    simple = request(page, f"POST /segment HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: {len(good)}", good)
    assert simple[0] == 415  # the one type a foreign page may send without asking first
    preflight = request(
        page, "OPTIONS /segment HTTP/1.1\r\nOrigin: http://evil.example\r\nAccess-Control-Request-Method: POST"
    )
    assert preflight[0] == 405 and not any(k.startswith("access-control") for k in preflight[1])
    clean_log(page)


def _radiance(side: int) -> bytes:
    """A Radiance .hdr whose header claims side x side: OpenCV decodes it, Pillow cannot measure it."""
    return f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {side} +X {side}\n".encode() + b"\x02\x02" * 64


MALFORMED = {
    "Content-Length: abc": ("Content-Length: abc", b"{}", 400),
    "negative length": ("Content-Length: -5", b"{}", 400),
    "no length": ("", b"{}", 411),
    "two lengths": ("Content-Length: 2\r\nContent-Length: 3", b"{}", 411),
    "chunked": ("Transfer-Encoding: chunked", b"2\r\n{}\r\n0\r\n\r\n", 411),
    "a terabyte announced": ("Content-Length: 1000000000000", b"{}", 413),
    "100k-deep JSON": (None, b"[" * 100_000, 400),
    "not UTF-8": (None, b"\xff\xfe\xfa{}", 400),
    "not an object": (None, b"[1, 2]", 400),
    "no normals": (None, b'{"queries": []}', 400),
    "name not text": (None, json.dumps({"normals": [{"name": 1, "data": ""}], "queries": []}).encode(), 400),
    "bad base64": (None, body(query="!!not base64!!"), 400),
    "not an image": (None, body(query=base64.b64encode(b"just some text").decode()), 400),
    "unmeasurable header": (None, body(query=base64.b64encode(_radiance(30000)).decode()), 400),
    "too many images": (None, body(normals=60), 413),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_requests_get_one_json_line(page, case):
    length, data, expected = MALFORMED[case]
    head = "POST /segment HTTP/1.1\r\nContent-Type: application/json"
    length = f"Content-Length: {len(data)}" if length is None else length
    status, _, payload = request(page, head + (f"\r\n{length}" if length else ""), data)
    assert status == expected, payload[:300]
    one_json_line(payload)
    assert clean_log(page)[-1].startswith(f"metauas app: {expected} POST")  # one line per refusal


@pytest.mark.parametrize("line", [b"GARBAGE", b"GET / HTTP/1.1 extra", b"GET /" + b"x" * 70000 + b" HTTP/1.1"])
def test_a_malformed_request_line_gets_json_too(page, line):
    answer = exchange(page, line + b"\r\n\r\n")  # http.server answers a line it cannot read as HTTP/0.9: no head
    assert "Bad request" in one_json_line(answer.split(b"\r\n\r\n")[-1]) or answer.startswith(b"HTTP/1.0 414")
    clean_log(page)


def _big_png(path: Path) -> str:
    """A 16-bit RGBA PNG of exactly the page's per-image limit: the costliest to decode."""
    from metauas.inference.app import IMAGE_PIXELS

    assert IMAGE_PIXELS == 4096 * 3072
    if not path.exists():
        cv2.imwrite(str(path), np.full((3072, 4096, 4), 30000, np.uint16))
    return base64.b64encode(path.read_bytes()).decode()


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_pixels_are_counted_before_decoding_and_memory_stays_under_2gb(page, tmp_path):
    bomb = base64.b64encode(png_bomb(tmp_path / "bomb.png", 16000).read_bytes()).decode()
    status, _, payload = post(page, body(query=bomb))
    assert status == 413 and "256,000,000 pixels" in one_json_line(payload)
    big = _big_png(tmp_path / "big.png")
    over = json.dumps(
        {"normals": [{"name": f"n{i}.png", "data": big} for i in range(2)], "queries": [{"name": "q.png", "data": big}]}
    ).encode()
    status, _, payload = post(page, over)
    assert status == 413 and "budget" in one_json_line(payload)
    full = json.dumps(
        {"normals": [{"name": "n.png", "data": big}], "queries": [{"name": "q.png", "data": big}]}
    ).encode()
    status, _, payload = post(page, full)
    assert status == 200 and json.loads(payload)["results"][0]["width"] == 4096
    assert peak_rss(page.pid) < 2 << 30, f"peak {peak_rss(page.pid) / 2**30:.2f} GiB"
    print(f"peak memory of the page's process: {peak_rss(page.pid) / 2**30:.2f} GiB")
    clean_log(page)


def _threads(pid: int) -> int:
    return int(
        next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Threads:")).split()[1]
    )


def _answered(conn: socket.socket) -> bool:
    """Whether the server has answered or closed this connection (never blocks; read
    only once it has: a second call on an answered connection is not asked)."""
    conn.setblocking(False)
    try:
        conn.recv(1 << 16)
        return True
    except BlockingIOError:
        return False
    except OSError:  # reset: closed with our unread bytes
        return True


class Answered:
    """The connections of a list that the server has answered or closed so far."""

    def __init__(self, conns: list[socket.socket]):
        self.conns, self.done = conns, set()

    def count(self) -> int:
        self.done |= {i for i, c in enumerate(self.conns) if i not in self.done and _answered(c)}
        return len(self.done)


def _until(condition, limit: float = 120.0) -> None:
    """Wait for `condition()` (a failure only if it never comes: no timing is asserted)."""
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "the server never got there"
        time.sleep(0.1)


STALLED = (
    "POST /segment HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    "Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
)


def test_300_stalled_connections_hold_no_more_threads_and_are_cut(page):
    from metauas.inference.app import BACKLOG, WORKERS

    assert post(page, body())[0] == 200  # every thread the model starts has started
    before = _threads(page.pid)
    stalled = []
    for _ in range(300):
        conn = socket.create_connection(("127.0.0.1", page.port), timeout=60)
        conn.sendall(STALLED.format(port=page.port, length=100).encode() + b"{")
        stalled.append(conn)
    # the server has accepted all 300 once all but those its workers and queue hold are answered
    answered = Answered(stalled)
    _until(lambda: answered.count() >= 300 - WORKERS - BACKLOG)
    assert _threads(page.pid) <= before
    _until(lambda: answered.count() == 300)  # the rest: cut at their deadline
    for conn in stalled:
        conn.close()
    assert post(page, body())[0] == 200
    clean_log(page)


def test_a_client_trickling_bytes_is_cut_at_its_deadline(page):
    with socket.create_connection(("127.0.0.1", page.port), timeout=60) as conn:
        conn.sendall(STALLED.format(port=page.port, length=100_000).encode())
        conn.setblocking(False)
        got = []

        def cut() -> bool:  # one byte each time: more often than the per-read timeout
            try:
                conn.send(b" ")
                got.append(conn.recv(1 << 16))
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                return True
            return True

        _until(cut)
        assert got in ([], [b""]), got  # cut, not answered: the request was never whole
    assert post(page, body())[0] == 200


def test_the_page_scores_as_the_api(page, mvtec_root):
    from metauas.inference.api import Segmenter

    tile = mvtec_root / "tile"
    files = [tile / "train/good/000.png", tile / "train/good/001.png", tile / "test/blob/000.png"]
    data = [base64.b64encode(f.read_bytes()).decode() for f in files]
    status, _, payload = post(
        page,
        json.dumps(
            {
                "normals": [{"name": "a.png", "data": data[0]}, {"name": "b.png", "data": data[1]}],
                "queries": [{"name": "q.png", "data": data[2]}],
            }
        ).encode(),
    )
    assert status == 200
    out = json.loads(payload)
    api = Segmenter.load(page.checkpoint, method="model", size=64, device="cpu").set_prompts(*files[:2])
    assert abs(out["threshold"] - api.fit_threshold()) <= 1e-5
    assert abs(out["results"][0]["score"] - api.segment(files[2]).score) <= 1e-5


def test_a_reachable_address_is_warned_about_before_anything_else():
    exposed = cli("app", "--host", "0.0.0.0", "--checkpoint", "missing.pt", "--port", "0")
    lines = [line for line in exposed.stderr.splitlines() if line.strip()]
    assert "Traceback" not in exposed.stderr and exposed.returncode == 2
    assert lines[0].startswith("warning: --host 0.0.0.0") and "no authentication" in lines[0]
    assert lines[-1].startswith("error: ")  # (on 127.0.0.1 there is no warning: see clean_log)


def test_the_page_takes_the_lookup_encoder_as_predict_does():
    """`app --lookup-encoder` reaches the scorer: a name timm does not know is one error
    line before anything is served, as in predict and export."""
    run = cli("app", "--method", "lookup", "--lookup-encoder", "no_such_net", "--port", "0")
    assert "Traceback" not in run.stderr and run.returncode == 2
    assert "unknown encoder 'no_such_net'" in run.stderr and "serving" not in run.stdout


FUZZ = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
GOOD = cv2.imencode(".png", textured(np.random.default_rng(1), 48))[1].tobytes()


def _edit(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    buf = bytearray(data)
    for where, value in edits:
        buf[where % len(buf)] = value
    return bytes(buf)


FILE = st.builds(
    _edit,
    st.integers(1, len(GOOD)).map(lambda cut: GOOD[:cut]),
    st.lists(st.tuples(st.integers(0, 10**5), st.integers(0, 255)), max_size=6),
)
VALUE = (
    st.none() | st.booleans() | st.integers() | st.text(max_size=6) | FILE.map(lambda b: base64.b64encode(b).decode())
)
ITEM = st.fixed_dictionaries({"name": st.text(max_size=12) | st.integers(), "data": VALUE}) | VALUE
BODY = (
    st.fixed_dictionaries(
        {"normals": st.lists(ITEM, max_size=3) | VALUE, "queries": st.lists(ITEM, max_size=3) | VALUE}
    )
    | VALUE
)


@FUZZ
@given(BODY)
def test_fuzzed_bodies_get_an_answer_or_a_json_line(page, drawn):
    status, _, payload = post(page, json.dumps(drawn).encode())
    assert status in (200, 400, 413), payload[:300]
    if status != 200:
        one_json_line(payload)
    clean_log(page)
