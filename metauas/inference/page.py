"""The HTML, CSS and script of `metauas app` (app.py serves it): one file, no library.

What the script does, and why it is done in the browser:
- files come from the file inputs or from a drop of files or folders on either zone
  (a folder's files are named by their path inside it, and a name given twice gets
  " (2)", so each tile names one file);
- each query's map arrives at full size with 16 bits per pixel (see app._result), so
  the heatmap, the mask at any threshold, the decisions and the downloads are computed
  here, without another request;
- the heatmap and the colour bar use OpenCV's JET table itself (JET below), so the page
  shows the colours of predict's overlays and evaluate's report;
- downloads are made here: the map files the server sent (predict's 16-bit PNG), the
  masks at the current threshold (PNG, white = anomalous), and predictions.csv, alone
  or as one zip laid out like predict's --out (maps/, masks/, predictions.csv);
- every text that comes from a file name or the server is set with `textContent`,
  never parsed as HTML; the Content-Security-Policy (hashes of this script and style)
  refuses any other script.
"""

from __future__ import annotations

import base64
import hashlib
import json

import cv2
import numpy as np

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
h2{font-size:1em;margin:0 0 4px}
#inputs{display:flex;flex-wrap:wrap;gap:12px}
.drop{flex:1 1 320px;border:2px dashed #aaa;border-radius:8px;padding:8px 12px;background:#fff}
.drop.over{border-color:#06c;background:#eef5ff}
.drop ol{margin:4px 0;padding-left:20px;max-height:120px;overflow:auto;font-size:.9em}
#status{margin-left:12px;color:#555}
#controls{margin-top:12px}
#colourbar{display:block;margin:6px 0 0}
#tnumber{width:6em}
.note{font-size:.8em;color:#555;margin:0 0 8px}
.result{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;margin-top:12px}
.tiles{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0}
figure canvas{display:block;width:200px;max-width:100%;border:1px solid #bbb}
figcaption{font-size:.8em;color:#444;max-width:200px;overflow-wrap:anywhere}
.verdict{margin:6px 0 2px}
.bad{color:#c00;font-weight:bold}.ok{color:#070}
"""

SCRIPT = r"""
'use strict';
const JET = __JET__;  // OpenCV's COLORMAP_JET as 256 x (r, g, b): predict's overlay colours
const MAX_REQUEST = __MAX_REQUEST__;  // bytes the server reads of one request (app.MAX_REQUEST)
const $ = (id) => document.getElementById(id);
const picked = {normals: [], queries: []};  // {file, label}, in the order given
let shown = [], reply = null, current = 0.5;

function say(text) { $('status').textContent = text; }
function busy(on) { for (const id of ['run', 'example', 'clear']) $(id).disabled = on; }
const isImage = (file) => file.type.startsWith('image/') || /\.(png|jpe?g|webp|bmp|tiff?|gif)$/i.test(file.name);

// ---- choosing files: inputs and drops ------------------------------------------------
function add(kind, items) {
  const taken = new Set(picked[kind].map((p) => p.label));
  let skipped = 0;
  for (const {file, path} of items) {
    if (!isImage(file)) { skipped++; continue; }
    let label = path, n = 1;
    while (taken.has(label)) label = `${path} (${++n})`;
    taken.add(label);
    picked[kind].push({file, label});
  }
  $(kind + '-list').replaceChildren(...picked[kind].map((p) => {
    const li = document.createElement('li'); li.textContent = p.label; return li; }));
  say(skipped ? `left out ${skipped} file(s) that are not images` : '');
}
async function walk(entry, out) {  // a dropped folder, depth first; paths inside the drop
  if (entry.isFile) {
    out.push({file: await new Promise((ok, fail) => entry.file(ok, fail)), path: entry.fullPath.replace(/^\//, '')});
    return;
  }
  const reader = entry.createReader(), children = [];
  for (let batch; (batch = await new Promise((ok, fail) => reader.readEntries(ok, fail))).length;) children.push(...batch);
  children.sort((a, b) => (a.name < b.name ? -1 : 1));
  for (const child of children) await walk(child, out);
}
async function dropped(data) {
  // read the DataTransfer now: it is emptied once the event handler returns
  const entries = [...data.items].filter((i) => i.kind === 'file').map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  const files = [...data.files];
  if (!entries.length || !entries.every(Boolean)) return files.map((file) => ({file, path: file.name}));
  const out = [];
  for (const entry of entries) await walk(entry, out);
  return out;
}
for (const kind of ['normals', 'queries']) {
  const zone = $(kind + '-zone'), input = $(kind);
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', async (e) => {
    e.preventDefault(); e.stopPropagation(); zone.classList.remove('over');
    add(kind, await dropped(e.dataTransfer));
  });
  input.addEventListener('change', () => { add(kind, [...input.files].map((file) => ({file, path: file.name}))); input.value = ''; });
}
// a file dropped beside the zones must not replace the page with the image
window.addEventListener('dragover', (e) => e.preventDefault());
window.addEventListener('drop', (e) => e.preventDefault());

// ---- talking to the server ------------------------------------------------------------
const read = (p) => new Promise((ok, fail) => {
  const r = new FileReader();
  r.onload = () => ok({name: p.label, data: r.result.slice(r.result.indexOf(',') + 1)});
  r.onerror = () => fail(r.error); r.readAsDataURL(p.file);
});
async function ask(url, options) {
  const answer = await fetch(url, options);
  const out = await answer.json().catch(() => ({error: `the server answered ${answer.status} without a message`}));
  if (!answer.ok) throw new Error(out.error);
  return out;
}
async function run() {
  if (!picked.normals.length || !picked.queries.length) { say('choose or drop at least one normal and one query image'); return; }
  busy(true); say('segmenting...');
  try {
    const body = new Blob([JSON.stringify({normals: await Promise.all(picked.normals.map(read)),
                                           queries: await Promise.all(picked.queries.map(read))})]);
    if (body.size > MAX_REQUEST) {  // said here: a server that stops reading an upload looks like a network error
      say(`error: the images come to ${(body.size / 2 ** 20).toFixed(1)} MB; the page takes up to ${MAX_REQUEST / 2 ** 20} MB at a time`);
      return;
    }
    const out = await ask('segment', {method: 'POST', headers: {'Content-Type': 'application/json'}, body});
    await show(out);
    say(`${out.results.length} image(s), ${out.method} at ${out.size} px`);
  } catch (err) { say('error: ' + err.message); } finally { busy(false); }
}
async function example() {
  busy(true); say('loading the example...');
  try {
    const out = await ask('example');
    const file = (f) => ({file: new File([bytes(f.data)], f.name, {type: 'image/png'}), path: f.name});
    clear();
    add('normals', out.normals.map(file)); add('queries', out.queries.map(file));
  } catch (err) { say('error: ' + err.message); busy(false); return; }
  busy(false); await run();
}
function clear() {
  picked.normals = []; picked.queries = []; shown = []; reply = null;
  for (const id of ['normals-list', 'queries-list', 'results']) $(id).replaceChildren();
  $('controls').hidden = true; say('');
}

// ---- pictures -------------------------------------------------------------------------
const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const picture = (kind, b64) => new Promise((ok, fail) => {
  const i = new Image(); i.onload = () => ok(i); i.onerror = () => fail(new Error('the server sent an unreadable image'));
  i.src = `data:${kind};base64,${b64}`;
});
function canvas(w, h) { const c = document.createElement('canvas'); c.width = w; c.height = h; return c; }
function pixels(image) {
  const c = canvas(image.naturalWidth, image.naturalHeight), g = c.getContext('2d');
  g.drawImage(image, 0, 0);
  return g.getImageData(0, 0, c.width, c.height);
}
function sample(values, w, h, sw, sh) {  // nearest neighbour: the full map at the tile's size
  const out = new Uint16Array(sw * sh);
  for (let y = 0; y < sh; y++) {
    const row = Math.min(h - 1, Math.floor((y + 0.5) * h / sh)) * w;
    for (let x = 0; x < sw; x++) out[y * sw + x] = values[row + Math.min(w - 1, Math.floor((x + 0.5) * w / sw))];
  }
  return out;
}
function heat(query, small) {  // as overlay.heatmap: half JET colour, half the image
  const c = canvas(query.width, query.height), g = c.getContext('2d'), img = pixels(query);
  for (let i = 0; i < small.length; i++) {
    const k = 3 * Math.floor(small[i] / 257);
    for (let j = 0; j < 3; j++) img.data[4 * i + j] = Math.round(0.5 * JET[k + j] + 0.5 * img.data[4 * i + j]);
  }
  g.putImageData(img, 0, 0);
  return c;
}
function mask(values, w, h, t) {  // white where the map is above t
  const c = canvas(w, h), g = c.getContext('2d'), img = g.createImageData(w, h), cut = t * 65535;
  for (let i = 0; i < values.length; i++) {
    const v = values[i] > cut ? 255 : 0;
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v; img.data[4 * i + 3] = 255;
  }
  g.putImageData(img, 0, 0);
  return c;
}
function tile(source, role, name) {
  const figure = document.createElement('figure'), caption = document.createElement('figcaption');
  const c = source instanceof HTMLCanvasElement ? source : canvas(source.naturalWidth, source.naturalHeight);
  if (c !== source) c.getContext('2d').drawImage(source, 0, 0);
  c.dataset.role = role;
  caption.textContent = `${role}: ${name}`;
  figure.append(c, caption);
  return figure;
}

// ---- results ----------------------------------------------------------------------------
const stem = (name) => name.replace(/\.[^./]*$/, '').replace(/[^\p{L}\p{N}_.-]+/gu, '_').replace(/^[._]+/, '') || 'image';
function unique(stems) {
  const used = new Set();
  return stems.map((s) => { let out = s, n = 1; while (used.has(out)) out = `${s}-${++n}`; used.add(out); return out; });
}
async function result(r, prompt, promptName, fileStem) {
  const query = await picture('image/jpeg', r.query), full = pixels(await picture('image/png', r.values)).data;
  const values = new Uint16Array(r.width * r.height);
  for (let i = 0; i < values.length; i++) values[i] = full[4 * i] * 256 + full[4 * i + 1];
  const small = sample(values, r.width, r.height, query.naturalWidth, query.naturalHeight);
  const box = document.createElement('div'), tiles = document.createElement('div'), verdict = document.createElement('p');
  box.className = 'result'; tiles.className = 'tiles'; verdict.className = 'verdict';
  const maskTile = tile(canvas(query.naturalWidth, query.naturalHeight), 'mask', r.name);
  tiles.append(tile(prompt, 'prompt', promptName), tile(query, 'query', r.name), tile(heat(query, small), 'heatmap', r.name), maskTile);
  const s = {name: r.name, score: r.score, map: r.map, values, small, width: r.width, height: r.height,
             promptName, stem: fileStem, verdict, maskCanvas: maskTile.querySelector('canvas')};
  const links = document.createElement('p');
  for (const [label, make] of [['map', () => new Blob([bytes(s.map)], {type: 'image/png'})], ['mask', () => maskBlob(s)]]) {
    const button = document.createElement('button');
    button.textContent = `download ${label}`; button.dataset.download = label;
    button.addEventListener('click', async () => save(`${s.stem}_${label}.png`, await make()));
    links.append(button, ' ');
  }
  box.append(tiles, verdict, links);
  s.box = box;
  return s;
}
async function show(out) {
  const normals = await Promise.all(out.normals.map((n) => picture('image/jpeg', n.image)));
  const stems = unique(out.results.map((r) => stem(r.name)));
  const made = [];
  for (const [i, r] of out.results.entries()) made.push(await result(r, normals[r.prompt], out.normals[r.prompt].name, stems[i]));
  reply = out; shown = made;
  $('results').replaceChildren(...shown.map((s) => s.box));
  $('fitted').textContent = out.threshold === null
    ? 'one normal image: nothing to fit a threshold on (give two or more), so it starts at 0.5'
    : `fitted on ${out.normals.length} normal images: ${out.threshold.toFixed(4)} (the highest of their scores, each scored against the others)`;
  $('reset').disabled = out.threshold === null;
  $('controls').hidden = false;
  setThreshold(out.threshold ?? 0.5);
}

// ---- threshold, colour bar, decisions ---------------------------------------------------
function setThreshold(t, typed = false) {  // typed: from the number box, left as the user types it
  if (!Number.isFinite(t)) return;
  current = Math.min(1, Math.max(0, t));
  $('threshold').value = String(current);
  if (!typed) $('tnumber').value = current.toFixed(4);
  draw();
}
function colourbar() {
  const c = $('colourbar'), g = c.getContext('2d'), w = c.width - 32, left = 16;
  g.clearRect(0, 0, c.width, c.height);
  for (let x = 0; x < w; x++) {
    const k = 3 * Math.floor(x * 255 / (w - 1));
    g.fillStyle = `rgb(${JET[k]},${JET[k + 1]},${JET[k + 2]})`; g.fillRect(left + x, 0, 1, 16);
  }
  g.fillStyle = '#222'; g.font = '11px system-ui,sans-serif'; g.textAlign = 'center';
  for (const v of [0, 0.25, 0.5, 0.75, 1]) { g.fillRect(left + v * (w - 1), 16, 1, 4); g.fillText(v.toFixed(2), left + v * (w - 1), 31); }
  const marks = reply && reply.threshold !== null ? [[reply.threshold, '#fff', 3]] : [];
  for (const [v, colour, width] of [...marks, [current, '#000', 1]]) {  // black over white when they agree
    g.fillStyle = colour; g.fillRect(Math.round(left + v * (w - 1) - (width - 1) / 2), 0, width, 16);
  }
}
function draw() {
  colourbar();
  for (const s of shown) {
    s.maskCanvas.getContext('2d').drawImage(mask(s.small, s.maskCanvas.width, s.maskCanvas.height, current), 0, 0);
    const bad = s.score > current;
    s.verdict.className = 'verdict ' + (bad ? 'bad' : 'ok');
    s.verdict.textContent = `${s.name}: score ${s.score.toFixed(4)}, ${bad ? 'anomalous' : 'normal'}`;
  }
}

// ---- downloads ------------------------------------------------------------------------
function save(name, blob) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob); a.download = name; a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}
const maskBlob = (s) => new Promise((ok) => mask(s.values, s.width, s.height, current).toBlob(ok, 'image/png'));
function table() {  // predict's columns; a cell a spreadsheet would run as a formula is quoted
  const cell = (v) => {
    let text = String(v);
    if (/^[=+\-@\t\r]/.test(text)) text = "'" + text;
    return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  };
  const rows = [['query', 'score', 'anomalous', 'threshold', 'prompt', 'method', 'map', 'mask']];
  for (const s of shown) rows.push([s.name, s.score, s.score > current ? 'True' : 'False', current, s.promptName,
                                    reply.method, `maps/${s.stem}.png`, `masks/${s.stem}.png`]);
  return new Blob([rows.map((r) => r.map(cell).join(',')).join('\r\n') + '\r\n'], {type: 'text/csv'});
}
const CRC = Array.from({length: 256}, (_, n) => { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320 ^ (c >>> 1) : c >>> 1; return c >>> 0; });
function crc32(data) { let c = 0xFFFFFFFF; for (const b of data) c = CRC[(c ^ b) & 255] ^ (c >>> 8); return (c ^ 0xFFFFFFFF) >>> 0; }
function zip(files) {  // stored, not deflated: the PNGs are compressed already
  const parts = [], central = [];
  let offset = 0;
  for (const {name, data} of files) {
    const n = new TextEncoder().encode(name), crc = crc32(data);
    const local = new DataView(new ArrayBuffer(30)), entry = new DataView(new ArrayBuffer(46));
    for (const [view, at] of [[local, 0], [entry, 2]]) {  // the fields both headers share, 2 bytes apart
      view.setUint16(at + 4, 20, true); view.setUint16(at + 6, 0x0800, true);  // version 2.0; UTF-8 names
      view.setUint16(at + 12, 33, true); view.setUint32(at + 14, crc, true);  // date 1980-01-01
      view.setUint32(at + 18, data.length, true); view.setUint32(at + 22, data.length, true); view.setUint16(at + 26, n.length, true);
    }
    local.setUint32(0, 0x04034b50, true);
    entry.setUint32(0, 0x02014b50, true); entry.setUint16(4, 20, true); entry.setUint32(42, offset, true);
    parts.push(local, n, data); central.push(entry, n);
    offset += 30 + n.length + data.length;
  }
  const size = central.reduce((sum, p) => sum + p.byteLength, 0), end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true); end.setUint16(8, files.length, true); end.setUint16(10, files.length, true);
  end.setUint32(12, size, true); end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], {type: 'application/zip'});
}
async function zipAll() {
  const files = [{name: 'predictions.csv', data: new Uint8Array(await table().arrayBuffer())}];
  for (const s of shown) {
    files.push({name: `maps/${s.stem}.png`, data: bytes(s.map)});
    files.push({name: `masks/${s.stem}.png`, data: new Uint8Array(await (await maskBlob(s)).arrayBuffer())});
  }
  save('metauas-page.zip', zip(files));
}

$('run').addEventListener('click', run);
$('example').addEventListener('click', example);
$('clear').addEventListener('click', clear);
$('threshold').addEventListener('input', () => setThreshold(parseFloat($('threshold').value)));
$('tnumber').addEventListener('input', () => setThreshold(parseFloat($('tnumber').value), true));
$('reset').addEventListener('click', () => setThreshold(reply.threshold));
$('csv').addEventListener('click', () => save('predictions.csv', table()));
$('zip').addEventListener('click', zipAll);
colourbar();
"""

BODY = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>metauas</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>__STYLE__</style></head><body>
<h1>metauas: one normal image, any query</h1>
<p id="info">__INFO__</p>
<div id="inputs">
<section class="drop" id="normals-zone"><h2>Normal images</h2>
<p>Drop images or folders here, or <input type="file" id="normals" accept="image/*" multiple></p><ol id="normals-list"></ol></section>
<section class="drop" id="queries-zone"><h2>Query images</h2>
<p>Drop images or folders here, or <input type="file" id="queries" accept="image/*" multiple></p><ol id="queries-list"></ol></section>
</div>
<p><button id="run">Segment</button> <button id="example">Try an example</button> <button id="clear">Clear</button>
<span id="status" role="status"></span></p>
<section id="controls" hidden>
<p><label for="threshold">Threshold</label> <input type="range" id="threshold" min="0" max="1" step="any" value="0.5">
<input type="number" id="tnumber" min="0" max="1" step="any" value="0.5000" aria-label="threshold value">
<button id="reset">back to fitted</button> <span id="fitted"></span></p>
<canvas id="colourbar" width="544" height="34" aria-label="colour bar"></canvas>
<p class="note">heatmap colour of each map value, 0 to 1; black mark: the threshold, white mark: the fitted one</p>
<p><button id="csv">download CSV</button> <button id="zip">download maps, masks and CSV (zip)</button></p>
</section>
<div id="results"></div>
<script>__SCRIPT__</script></body></html>"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render_page(info_html: str, max_request: int) -> tuple[bytes, str]:
    """The page with `info_html` (already escaped) in its header line, and the
    Content-Security-Policy that allows its own script and style and nothing else."""
    jet = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1]
    script = SCRIPT.replace("__JET__", json.dumps(jet.reshape(-1).tolist())).replace(
        "__MAX_REQUEST__", str(max_request)
    )
    page = BODY.replace("__STYLE__", STYLE).replace("__SCRIPT__", script).replace("__INFO__", info_html)
    policy = (
        f"default-src 'none'; script-src {_hash(script)}; style-src {_hash(STYLE)}; img-src data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page.encode(), policy
