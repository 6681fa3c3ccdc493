"""`metauas app`: an interactive page to try a model on your own images, offline, on CPU.

Drop one or more normal images and query images; each query comes back as a heatmap
over the image with its score, and a threshold slider marks the pixels and the images
above it, in the browser (the page holds each map as an 8-bit grey image, so moving the
slider costs no round trip). With two or more normal images the slider starts at the
threshold fitted on them (`Segmenter.fit_threshold`), else at 0.5.

Why not Gradio (the paper authors' choice): measured here, `pip install gradio` adds
~100 packages and ~400 MB to an environment and `import gradio` alone takes seconds
(docs/api.md has the figures). This page is Python's own `http.server` and one HTML
file: nothing to install, up in a second. It binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import base64
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from metauas.data.images import decode
from metauas.errors import UserError
from metauas.inference.api import Segmenter
from metauas.inference.overlay import heatmap

MAX_REQUEST = 64 << 20  # bytes of one upload (images travel base64-encoded in JSON)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>metauas</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
fieldset{border:1px solid #ccc;border-radius:6px;margin:0 0 12px;padding:8px 12px}
#results{display:flex;flex-wrap:wrap;gap:16px;margin-top:16px}
.result{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
.result canvas{display:block;width:256px;max-width:100%;image-rendering:pixelated}
.bad{color:#c00;font-weight:bold}.ok{color:#070}#status{margin-left:12px;color:#555}
</style></head><body>
<h1>metauas: one normal image, any query</h1>
<p>__INFO__</p>
<fieldset><legend>Normal image(s) of the object</legend>
<input type="file" id="normals" accept="image/*" multiple></fieldset>
<fieldset><legend>Query image(s)</legend><input type="file" id="queries" accept="image/*" multiple></fieldset>
<button id="run">Segment</button><span id="status"></span>
<p><label>Threshold <input type="range" id="threshold" min="0" max="1" step="0.005" value="0.5">
<output id="tvalue">0.500</output></label></p>
<div id="results"></div>
<script>
const $ = (id) => document.getElementById(id);
const read = (file) => new Promise((ok, fail) => {
  const r = new FileReader(); r.onload = () => ok({name: file.name, data: r.result.split(',')[1]});
  r.onerror = fail; r.readAsDataURL(file); });
const image = (src) => new Promise((ok) => { const i = new Image(); i.onload = () => ok(i); i.src = src; });
let shown = [];
function draw() {
  const t = parseFloat($('threshold').value); $('tvalue').textContent = t.toFixed(3);
  for (const r of shown) {
    const c = r.canvas, g = c.getContext('2d');
    g.drawImage(r.heat, 0, 0, c.width, c.height);
    const over = g.getImageData(0, 0, c.width, c.height);
    for (let i = 0; i < r.map.length; i++) {
      if (r.map[i] > t * 255) { over.data[4*i] = 255; over.data[4*i+1] *= 0.3; over.data[4*i+2] *= 0.3; }
    }
    g.putImageData(over, 0, 0);
    const bad = r.score > t;
    r.label.className = bad ? 'bad' : 'ok';
    r.label.textContent = `${r.name}: score ${r.score.toFixed(3)}, ${bad ? 'anomalous' : 'normal'}`;
  }
}
async function run() {
  const normals = [...$('normals').files], queries = [...$('queries').files];
  if (!normals.length || !queries.length) { $('status').textContent = 'choose normal and query images'; return; }
  $('status').textContent = 'segmenting...';
  const body = JSON.stringify({normals: await Promise.all(normals.map(read)),
                               queries: await Promise.all(queries.map(read))});
  const reply = await fetch('segment', {method: 'POST', headers: {'Content-Type': 'application/json'}, body});
  const out = await reply.json();
  if (!reply.ok) { $('status').textContent = 'error: ' + out.error; return; }
  $('results').innerHTML = ''; shown = [];
  for (const r of out.results) {
    const box = document.createElement('div'); box.className = 'result';
    const canvas = document.createElement('canvas'); canvas.width = r.width; canvas.height = r.height;
    const label = document.createElement('div');
    box.append(canvas, label); $('results').append(box);
    const heat = await image('data:image/png;base64,' + r.heatmap);
    const grey = await image('data:image/png;base64,' + r.map);
    const tmp = document.createElement('canvas'); tmp.width = r.width; tmp.height = r.height;
    const tg = tmp.getContext('2d'); tg.drawImage(grey, 0, 0);
    const px = tg.getImageData(0, 0, r.width, r.height).data;
    const map = new Uint8Array(r.width * r.height); for (let i = 0; i < map.length; i++) map[i] = px[4*i];
    shown.push({canvas, label, heat, map, score: r.score, name: r.name});
  }
  if (out.threshold !== null) $('threshold').value = out.threshold;
  $('status').textContent = `${out.results.length} image(s), ${out.method} at ${out.size} px`;
  draw();
}
$('run').onclick = run; $('threshold').oninput = draw;
</script></body></html>"""


def _png(array: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array)
    return base64.b64encode(buf.tobytes()).decode()


def _images(items: object, what: str) -> list[tuple[str, np.ndarray]]:
    if not isinstance(items, list) or not items:
        raise UserError(f"no {what} images were sent")
    out = []
    for item in items:
        try:
            name, data = str(item["name"]), base64.b64decode(item["data"], validate=True)
            out.append((name, decode(data)))
        except (KeyError, TypeError, ValueError):
            raise UserError(
                f"{what} image {item.get('name', '?') if isinstance(item, dict) else '?'} "
                "is not an image this page can read"
            ) from None
    return out


def segment_request(segmenter: Segmenter, body: dict, lock: threading.Lock) -> dict:
    """The page's one call: normal and query images in (base64), heatmaps and maps out."""
    normals, queries = _images(body.get("normals"), "normal"), _images(body.get("queries"), "query")
    with lock:  # one model, one request at a time (its prompt cache is shared)
        segmenter.set_prompts(*(rgb for _, rgb in normals))
        threshold = segmenter.fit_threshold() if len(normals) >= 2 else None
        results = segmenter.segment([rgb for _, rgb in queries])
    return {
        "method": segmenter.method,
        "size": segmenter.size,
        "threshold": threshold,
        "results": [
            {
                "name": name,
                "score": r.score,
                "width": rgb.shape[1],
                "height": rgb.shape[0],
                "heatmap": _png(heatmap(r.map, rgb)),
                "map": _png(np.round(np.clip(r.map, 0, 1) * 255).astype(np.uint8)),
            }
            for (name, rgb), r in zip(queries, results)
        ],
    }


def make_handler(segmenter: Segmenter, info: str) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()
    page = PAGE.replace("__INFO__", info).encode()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: dict) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self) -> None:  # the name http.server calls
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:  # the name http.server calls
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != "/segment":
                return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            if not 0 < length <= MAX_REQUEST:
                return self._json(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"send 1 byte to {MAX_REQUEST >> 20} MB"}
                )
            try:
                body = json.loads(self.rfile.read(length))
                self._json(HTTPStatus.OK, segment_request(segmenter, body if isinstance(body, dict) else {}, lock))
            except (UserError, ValueError) as err:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})

        def log_message(self, format: str, *args) -> None:  # quiet: the terminal shows the URL only
            pass

    return Handler


def serve(segmenter: Segmenter, host: str, port: int, info: str, ready=print) -> None:
    """Serve until interrupted; `ready(url)` is called once the socket listens (port 0:
    the system picks a free port, and the URL names it)."""
    try:
        server = ThreadingHTTPServer((host, port), make_handler(segmenter, info))
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err}); try another --port") from None
    ready(f"http://{host}:{server.server_address[1]}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
