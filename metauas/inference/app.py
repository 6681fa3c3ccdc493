"""`metauas app`: an interactive page to try a model on your own images, offline, on CPU.

Drop (or choose) normal images and query images; each query comes back as four tiles,
prompt | query | heatmap | thresholded mask, named after its file, with its score. A
threshold slider moves the masks and the decisions in the browser (the page holds each
map at 16-bit precision, so moving it costs no round trip); with two or more normal
images it starts at the threshold fitted on them (`Segmenter.fit_threshold`). Maps,
masks and a CSV download as one zip laid out as predict's `--out`. "Try an example"
segments texture crops made from scikit-image's own photographs.

Scoring goes through the Python API's public calls (`set_prompts`, `fit_threshold`,
`segment`), so the page scores a file exactly as `metauas.load` and predict do.

Why not Gradio (the paper authors' choice): measured here, `pip install gradio` adds
~100 packages and ~400 MB to an environment and `import gradio` alone takes seconds
(docs/api.md has the figures). This page is Python's own `http.server` and one HTML
file (page.py): nothing to install, up in a second.

Anyone who can reach the port can use the page: it has no authentication, so it binds
to 127.0.0.1 unless told otherwise (and warns when told otherwise). A web site open in
the same browser can reach 127.0.0.1 too; what the page does about that, and about
hostile uploads, is the threat model in docs/reliability.md: same-origin requests only,
pixels counted from the headers before anything is decoded, one request on the model at
a time, a fixed pool of worker threads and a deadline for slow clients.
"""

from __future__ import annotations

import base64
import html
import ipaddress
import json
import queue
import re
import socket
import sys
import threading
import time
import typing
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import cv2
import numpy as np

from metauas.data.images import SkipSource, decode_rgb, header_size
from metauas.errors import UserError
from metauas.inference.api import Segmentation, Segmenter
from metauas.inference.page import render_page

MAX_REQUEST = 32 << 20  # bytes of one upload (images travel base64-encoded in JSON)
# Pixels, from the headers, before anything is decoded. Decoding a 16-bit RGBA PNG costs
# about 45 bytes a pixel at its peak, a kept image 3 and a kept map 4: with the ~0.9 GB a
# loaded model process holds, two 12-megapixel photos stay well under 2 GB
# (tests/faults/test_page_faults.py measures the peak).
IMAGE_PIXELS = 4096 * 3072  # per image: a 12-megapixel phone photo fits
REQUEST_PIXELS = 2 * IMAGE_PIXELS  # per request, all images together
MAX_IMAGES = 48  # per request: each one is an encoder pass
MAX_NAME = 255  # characters of a file name kept
VIEW_SIDE = 512  # longest side of the images the page shows (maps travel at full size)
WORKERS = 4  # threads serving connections; one request at a time uses the model
BACKLOG = 16  # accepted connections waiting for a worker; more are answered 503 at once
TIMEOUT = 30.0  # seconds a client has to send its request, and to take the answer


class RequestError(Exception):
    """A request the page answers with `status` and a one-line JSON error."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def _files(items: object, what: str) -> list[tuple[str, bytes]]:
    """(name, file bytes) of the uploads under one key, checked for shape."""
    if not isinstance(items, list) or not items:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"no {what} images were sent")
    out = []
    for item in items:
        name, data = (item.get("name"), item.get("data")) if isinstance(item, dict) else (None, None)
        if not isinstance(name, str) or not isinstance(data, str):
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f'each {what} image must be {{"name": text, "data": base64 text}}'
            )
        name = name[:MAX_NAME]
        try:
            out.append((name, base64.b64decode(data, validate=True)))
        except ValueError:  # binascii.Error, and non-ASCII text, are ValueErrors
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{what} image {name}: its data is not base64") from None
    return out


def check_budget(files: list[tuple[str, bytes]]) -> None:
    """Refuse a request before decoding any of it: each image's size comes from its header
    (Pillow reads only the header), against a limit per image and a budget per request.
    A file whose header Pillow cannot measure is refused too, since OpenCV alone would
    decode it unmeasured (a Radiance .hdr can claim any size)."""
    if len(files) > MAX_IMAGES:
        raise RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"{len(files)} images in one request; the page takes up to {MAX_IMAGES}",
        )
    total = 0
    for name, data in files:
        size = header_size(data)
        if size is None:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"{name} is not an image this page can read (JPEG, PNG, WebP, BMP, TIFF or GIF)"
            )
        pixels = size[0] * size[1]
        if pixels > IMAGE_PIXELS:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"{name} has {pixels:,} pixels, over the page's "
                f"limit of {IMAGE_PIXELS:,} per image (metauas predict takes larger files)",
            )
        total += pixels
    if total > REQUEST_PIXELS:
        raise RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"{total:,} pixels in one request, over the page's "
            f"budget of {REQUEST_PIXELS:,}: send fewer or smaller images at a time",
        )


def _decode(files: list[tuple[str, bytes]]) -> list[tuple[str, np.ndarray]]:
    """RGB arrays through the project's one bounded reader (as predict reads files)."""
    out = []
    for name, data in files:
        try:
            out.append((name, decode_rgb(data, name, max_pixels=IMAGE_PIXELS)))
        except SkipSource as skip:
            status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE if skip.reason == "too_large" else HTTPStatus.BAD_REQUEST
            raise RequestError(status, f"{name} is not an image this page can read ({skip.reason})") from None
    return out


def _encoded(array: np.ndarray, ext: str, *params: int) -> str:
    ok, buf = cv2.imencode(ext, array, list(params))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {ext} image")
    return base64.b64encode(buf.tobytes()).decode()


def _view(rgb: np.ndarray) -> str:
    """The image as the page shows it: at most VIEW_SIDE px, JPEG (display only)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, VIEW_SIDE / max(h, w))
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return _encoded(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)


def _result(name: str, rgb: np.ndarray, result: Segmentation) -> dict:
    """One query's answer. `map` is predict's map file (16-bit PNG, 65535 = 1) for the
    download; `values` carries the same 16 bits as red (high byte) and green (low byte)
    of an 8-bit PNG, which a browser canvas reads back exactly (it reads 16-bit PNGs as 8)."""
    if not np.isfinite(result.score):
        raise RequestError(
            HTTPStatus.INTERNAL_SERVER_ERROR, f"the map of {name} is not finite: is the checkpoint broken?"
        )
    level = np.round(np.clip(result.map, 0, 1) * 65535).astype(np.uint16)
    split = np.dstack([np.zeros_like(level), level & 255, level >> 8]).astype(np.uint8)  # BGR: R high, G low
    return {
        "name": name,
        "score": result.score,
        "prompt": result.prompts[0],
        "width": rgb.shape[1],
        "height": rgb.shape[0],
        "query": _view(rgb),
        "map": _encoded(level, ".png"),
        "values": _encoded(split, ".png"),
    }


def parse_json(data: bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; 100k "[" is a RecursionError
        raise RequestError(HTTPStatus.BAD_REQUEST, "the body is not JSON (or is nested too deeply)") from None


def segment_request(segmenter: Segmenter, body: object) -> dict:
    """The page's one call: normal and query images in (base64), maps and scores out.
    Everything is counted before anything is decoded; the caller holds the model's lock."""
    if not isinstance(body, dict):
        raise RequestError(
            HTTPStatus.BAD_REQUEST, 'the body must be a JSON object: {"normals": [...], "queries": [...]}'
        )
    normal_files, query_files = _files(body.get("normals"), "normal"), _files(body.get("queries"), "query")
    check_budget(normal_files + query_files)
    normals, queries = _decode(normal_files), _decode(query_files)
    segmenter.threshold = None  # one fitted for an earlier request must not decide this one
    segmenter.set_prompts(*(rgb for _, rgb in normals))
    threshold = segmenter.fit_threshold() if len(normals) >= 2 else None
    results = typing.cast(list, segmenter.segment([rgb for _, rgb in queries]))  # a list in, a list out
    return {
        "method": segmenter.method,
        "size": segmenter.size,
        "threshold": threshold,
        "normals": [{"name": name, "image": _view(rgb)} for name, rgb in normals],
        "results": [_result(name, rgb, r) for (name, rgb), r in zip(queries, results)],
    }


@lru_cache(maxsize=1)
def example_body() -> bytes:
    """ "Try an example": three normal crops of scikit-image's `brick` texture, and two
    defective ones (a patch of its `gravel`, a drawn crack). Made here from the photos
    the package ships, so the page needs no data files and no network."""
    from skimage import data

    brick, gravel, side = data.brick(), data.gravel(), 224
    crops = [
        np.ascontiguousarray(brick[y : y + side, x : x + side]) for y, x in ((0, 0), (0, 288), (288, 0), (288, 288))
    ]
    spot, crack = crops[3].copy(), crops[3].copy()
    disk = cv2.circle(np.zeros_like(spot), (140, 90), 28, 255, -1) > 0
    spot[disk] = gravel[100 : 100 + side, 100 : 100 + side][disk]
    cv2.polylines(crack, [np.array([[40, 60], [80, 75], [110, 70], [150, 95], [190, 100]], np.int32)], False, 20, 4)
    files = lambda named: [{"name": n, "data": _encoded(a, ".png")} for n, a in named]  # noqa: E731
    return json.dumps(
        {
            "normals": files((f"brick-normal-{i}.png", a) for i, a in enumerate(crops[:3], 1)),
            "queries": files([("brick-gravel-spot.png", spot), ("brick-crack.png", crack)]),
        }
    ).encode()


def _hostname(host: str) -> str:
    """The name of a Host header ('name:port', '[v6]:port'), lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check_caller(headers, names: frozenset[str], post: bool) -> None:
    """Same-origin requests only. The Host must be an IP address or one of `names`: a web
    site that rebinds its DNS name to 127.0.0.1 sends its own name. A POST must come with
    no Origin (curl, scripts) or this page's, not be marked cross-site by the browser, and
    be `application/json`: a cross-site page cannot send that type without a preflight,
    which the page never grants."""
    host = headers.get("Host", "")
    name = _hostname(host)
    try:
        ipaddress.ip_address(name)
    except ValueError:
        if name not in names:
            raise RequestError(
                HTTPStatus.FORBIDDEN, f"this page answers to its own address, not to Host {host[:80]!r}"
            ) from None
    if not post:
        return
    origin = headers.get("Origin")
    if (origin is not None and origin != f"http://{host}") or headers.get("Sec-Fetch-Site", "none") not in (
        "same-origin",
        "none",
    ):
        raise RequestError(HTTPStatus.FORBIDDEN, "requests from other web sites are refused")
    kind = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"send application/json, not {kind[:60] or 'no type'!r}")


def allowed_names(host: str) -> frozenset[str]:
    """Host names the page answers to (besides IP addresses): this machine's."""
    names = {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names | {host.lower()})


def exposure_warning(host: str) -> str | None:
    """The warning for an address other machines can reach (None for loopback)."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        if host.lower() == "localhost":
            return None
    return (
        f"warning: --host {host}: the page has no authentication; anyone who can reach this port can run "
        "the model on this machine and send it images. Use 127.0.0.1 unless the network is trusted."
    )


def _printable(text: str) -> str:
    """A message for the server's log: one line, no terminal control characters."""
    return re.sub(r"[^\x20-\x7e\u00a0-\U0010ffff]", "?", text)[:300]


class Deadlines:
    """One thread that cuts connections whose client is too slow: a connection gets
    `seconds` to send its request and, once answered, `seconds` to take the answer (the
    model's time in between is not counted). Per-read socket timeouts alone would let a
    client that sends a byte now and then hold a worker for ever."""

    def __init__(self, seconds: float):
        self._due: dict[socket.socket, float] = {}
        self.seconds, self._lock = seconds, threading.Lock()
        threading.Thread(target=self._watch, name="metauas-app-deadlines", daemon=True).start()

    def start(self, conn: socket.socket) -> None:
        with self._lock:
            self._due[conn] = time.monotonic() + self.seconds

    def stop(self, conn: socket.socket) -> None:
        with self._lock:
            self._due.pop(conn, None)

    def _watch(self) -> None:
        while True:
            time.sleep(min(0.5, self.seconds / 4))
            now = time.monotonic()
            with self._lock:
                late = [conn for conn, due in self._due.items() if due < now]
                for conn in late:
                    del self._due[conn]
            for conn in late:  # the worker blocked on it sees the end of the stream
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


BUSY = json.dumps({"error": "the page is busy; try again in a moment"}).encode()


def _discard_pending(conn: socket.socket) -> None:
    """Read what the client sent that no one will read (a refused request's body): a
    socket closed with unread data is reset by the kernel, and the client may lose the
    answer it was sent. Only what has already arrived; never waits."""
    try:
        conn.setblocking(False)
        for _ in range(64):
            if not conn.recv(1 << 16):
                break
    except OSError:
        pass


class PageServer(HTTPServer):
    """http.server with a fixed pool of WORKERS threads and a queue of BACKLOG accepted
    connections: 300 stalled clients hold WORKERS threads until their deadline, and the
    rest are answered 503 at once (ThreadingHTTPServer would start a thread for each)."""

    request_queue_size = 128  # the listen backlog: a burst of connections is accepted, then sorted

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], timeout: float):
        super().__init__(address, handler)
        self.deadlines = Deadlines(timeout)
        self.waiting: queue.Queue = queue.Queue(maxsize=BACKLOG)
        for i in range(WORKERS):
            threading.Thread(target=self._work, name=f"metauas-app-{i}", daemon=True).start()

    def process_request(self, request: Any, client_address: Any) -> None:  # a TCP server: request is a socket
        try:
            self.waiting.put_nowait((request, client_address))
        except queue.Full:
            try:
                request.setblocking(False)
                request.send(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(BUSY), BUSY)
                )
            except OSError:
                pass
            _discard_pending(request)
            self.shutdown_request(request)

    def _work(self) -> None:
        while True:
            request, client_address = self.waiting.get()
            self.deadlines.start(request)
            try:
                self.finish_request(request, client_address)
            except OSError:  # the client went away or was cut for being slow: no one to answer
                pass
            except Exception as err:  # noqa: BLE001 - a bug must not take the worker down; one line, no traceback
                sys.stderr.write(f"metauas app: internal error {_printable(f'{type(err).__name__}: {err}')}\n")
            finally:
                self.deadlines.stop(request)
                _discard_pending(request)
                self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:  # socketserver's default prints a traceback
        sys.stderr.write(
            f"metauas app: connection from {client_address[0]} failed: {_printable(str(sys.exc_info()[1]))}\n"
        )


class PageHandler(BaseHTTPRequestHandler):
    """The page, the example and /segment. `make_handler` fills in the class attributes:
    one model and its lock (one request on it at a time: its prompt cache is shared, and
    one request's memory is the bound), the page and its policy, the allowed host names."""

    server: PageServer  # the deadlines live there
    segmenter: Segmenter
    lock: threading.Lock
    page: bytes
    policy: str
    names: frozenset[str]
    seconds: float

    def version_string(self) -> str:  # the Server header: no Python version for a prober
        return "metauas"

    def setup(self) -> None:
        self.timeout = self.seconds  # type: ignore[misc]  # per read and write, per connection (the class's default otherwise); the deadline bounds the whole request
        super().setup()

    def _send(self, status: int, body: bytes, kind: str, extra: dict | None = None) -> None:
        self.send_response(status)
        for key, value in {
            "Content-Type": kind,
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Connection": "close",
            **(extra or {}),
        }.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict | bytes) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload, allow_nan=False).encode()
        self._send(status, body, "application/json")

    def _answer(self, work) -> None:
        """Run `work()`; a RequestError is its status and one JSON line (logged); a
        client that went away gets nothing; anything else is a bug: 500, one line."""
        try:
            work()
        except RequestError as err:
            self._refuse(err.status, str(err))
        except (ConnectionError, TimeoutError):  # the client went away, or was cut for being slow
            self.close_connection = True
        except Exception as err:  # noqa: BLE001 - one line in the log, the server stays up
            self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(err).__name__}: {err})")

    def _refuse(self, status: int, message: str) -> None:
        if status != HTTPStatus.NOT_FOUND:
            sys.stderr.write(
                f"metauas app: {int(status)} {self.command} from {self.client_address[0]}: {_printable(message)}\n"
            )
        try:
            self._json(status, {"error": message})
        except OSError:
            self.close_connection = True

    def _get(self) -> None:
        check_caller(self.headers, self.names, post=False)
        path = self.path.split("?")[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.page, "text/html; charset=utf-8", {"Content-Security-Policy": self.policy})
        elif path == "/example":
            self._json(HTTPStatus.OK, example_body())
        else:
            raise RequestError(HTTPStatus.NOT_FOUND, "not found")

    def _body(self) -> bytes:
        """The request's body, its length checked before a byte of it is read."""
        lengths = self.headers.get_all("Content-Length") or []
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or len(lengths) != 1:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send one Content-Length (chunked uploads are not taken)")
        if not re.fullmatch(r"[0-9]{1,18}", lengths[0].strip()):
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"Content-Length must be a number of bytes, not {lengths[0][:40]!r}"
            )
        length = int(lengths[0])
        if not 0 < length <= MAX_REQUEST:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"send 1 byte to {MAX_REQUEST >> 20} MB, not {length:,}"
            )
        data = self.rfile.read(length)
        if len(data) < length:
            raise ConnectionAbortedError("the client stopped sending")
        return data

    def _post(self) -> None:
        if self.path.split("?")[0] != "/segment":
            raise RequestError(HTTPStatus.NOT_FOUND, "not found")
        check_caller(self.headers, self.names, post=True)
        data = self._body()
        self.server.deadlines.stop(self.connection)  # the model's time is not the client's
        with self.lock:  # parsing too: the bodies other workers hold are bytes, one request is objects
            reply = json.dumps(segment_request(self.segmenter, parse_json(data)), allow_nan=False).encode()
        del data
        self.server.deadlines.start(self.connection)
        self._json(HTTPStatus.OK, reply)

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _not_allowed(self) -> None:
        self.close_connection = True
        self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not answered here (no CORS preflight either)")

    do_OPTIONS = do_PUT = do_DELETE = do_PATCH = do_HEAD = _not_allowed

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, headers too long):
        one JSON line like every other error, not its HTML page."""
        self.close_connection = True
        try:
            self._json(code, {"error": message or HTTPStatus(code).phrase})
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:  # the terminal shows the URL and refusals only
        pass


def make_handler(
    segmenter: Segmenter, info: str, names: frozenset[str], timeout: float = TIMEOUT
) -> type[BaseHTTPRequestHandler]:
    """A PageHandler for this model; `info` (the header line) is escaped into the page."""
    page, policy = render_page(html.escape(info), MAX_REQUEST)
    return type(
        "Handler",
        (PageHandler,),
        {
            "segmenter": segmenter,
            "lock": threading.Lock(),
            "page": page,
            "policy": policy,
            "names": names,
            "seconds": timeout,
        },
    )


def serve(segmenter: Segmenter, host: str, port: int, info: str, ready=print, timeout: float = TIMEOUT) -> None:
    """Serve until interrupted; `ready(url)` is called once the socket listens (port 0:
    the system picks a free port, and the URL names it)."""
    try:
        server = PageServer((host, port), make_handler(segmenter, info, allowed_names(host), timeout), timeout)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err}); try another `port`") from None
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    ready(f"http://{shown}:{server.server_address[1]}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
