"""A local page to look and click: the same individuals under do() and given conditions.

    python -m figure_scripts explore --load_path logs/<run> [--port 0] [--size 16]

serves http://127.0.0.1:<port>/ (a free port when 0; the address is printed) until Ctrl-C.
The page shows the run's causal graph; for each node a choice of free / do=0 / do=1 /
given=0 / given=1; a grid of the same fixed individuals under the choice, redrawn on each
change, beside a second grid for comparison (the same choice with do and given swapped,
or no choice at all); bars of each label's P(label = 1) under both, from the controller
and, on the toy faces, the exact truth; a seed field; and a download of both grids as one
PNG. A choice the controller can hardly meet, or a node that is not in the graph, is a
message on the page. Everything is computed by ``api.Run`` (docs/API.md).

Why the standard library (``http.server``) and plain JavaScript: the page is one form
and two pictures, answered by one JSON request per choice; a web framework (Flask,
Gradio, Streamlit, Dash) would add a dependency, and most of them their own server
process model and a front-end build, for nothing this page needs. The server listens on
127.0.0.1 only and computes one answer at a time (a lock around the model).

Endpoints: ``/`` the page; ``/api/view?q=<JSON>`` the answer to a choice, with
``q = {"do": {node: 0|1}, "cond": {node: 0|1}, "seed": int, "compare": "swap"|"none"}``;
``/api/grid.png?q=<JSON>`` the two grids as one PNG file.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np

import api
from errors import UserError

HOST = "127.0.0.1"  # never another interface: the page is for this machine's user
COMPARE_MODES = {"swap": "do and given swapped", "none": "no choice (observational)"}
CHOICES = (("free", "free"), ("do0", "do=0"), ("do1", "do=1"), ("given0", "given=0"),
           ("given1", "given=1"))


# ----------------------------------------------------------------------------- answers
def parse_query(text: str | None) -> dict:
    """The page's request ``q`` (JSON) as {"do", "cond", "seed", "compare"}; UserError
    when it is not that shape (the node names and values are checked by api.Run)."""
    try:
        q = json.loads(text) if text else {}
    except json.JSONDecodeError as err:
        raise UserError(f"the request is not JSON ({err})") from None
    if not isinstance(q, dict):
        raise UserError("the request must be a JSON object")
    do, cond = q.get("do") or {}, q.get("cond") or {}
    if not isinstance(do, dict) or not isinstance(cond, dict):
        raise UserError("do and cond must be objects {node: value}")
    both = sorted(set(do) & set(cond))
    if both:
        raise UserError(f"{', '.join(both)}: choose do or given for a node, not both")
    try:
        seed = int(q.get("seed", 0))
    except (TypeError, ValueError):
        raise UserError(f"the seed must be a whole number; got {q.get('seed')!r}") from None
    if not 0 <= seed < 2**31:
        raise UserError(f"the seed must lie in 0 .. {2**31 - 1}; got {seed}")
    compare = q.get("compare", "swap")
    if compare not in COMPARE_MODES:
        raise UserError(f"compare must be one of {', '.join(COMPARE_MODES)}; got {compare!r}")
    return {"do": do, "cond": cond, "seed": seed, "compare": compare}


def comparison(q: dict) -> tuple[dict, dict]:
    """(do, cond) of the second grid."""
    if q["compare"] == "none":
        return {}, {}
    return dict(q["cond"]), dict(q["do"])


def png_bytes(grid: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid).save(buffer, format="PNG")
    return buffer.getvalue()


def _number(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 4)


class Explorer:
    """The page's computations over one run: ``view(q)`` answers a choice (the JSON the
    page shows), ``grid_png(q)`` the download, ``page()`` the HTML."""

    def __init__(self, run: api.Run, size: int = 16, cols: int = 8, zoom: int = 3):
        if not run.has_images:
            raise UserError(f"{run.saved.model_dir} trained the controller only: the explorer "
                            "shows images, so open a run made with --model_type dcgan or "
                            "began (api.Run.probabilities works on this one).")
        if size < 1 or cols < 1 or zoom < 1:
            raise UserError("--size, --cols and --zoom must be at least 1")
        self.run, self.size, self.cols, self.zoom = run, int(size), int(cols), int(zoom)
        self.lock = threading.Lock()  # TensorFlow's state is shared: one answer at a time

    def _panel(self, do: dict, cond: dict, seed: int) -> tuple[dict, np.ndarray | None]:
        """One grid's JSON part and its uint8 grid (None with an error message)."""
        title = api.describe(do, cond)
        try:
            sample = self.run.sample(do=do, cond=cond, n=self.size, seed=seed)
            table = self.run.probabilities(do=do, cond=cond, seed=seed)
        except UserError as err:
            return {"title": title, "error": str(err)}, None
        grid = sample.grid(self.cols)
        probabilities = {name: {column: _number(table.at[name, column])
                                for column in ("model", "truth", "data")}
                         for name in table.index}
        return {"title": title, "error": None, "redrawn": int(sample.redrawn.sum()),
                "acceptance": _number(table.attrs["acceptance"]),
                "probabilities": probabilities, "width": int(grid.shape[1]) * self.zoom,
                "grid": "data:image/png;base64," + base64.b64encode(png_bytes(grid)).decode()
                }, grid

    def _grids(self, q: dict):
        with self.lock:
            main, main_grid = self._panel(q["do"], q["cond"], q["seed"])
            other, other_grid = self._panel(*comparison(q), q["seed"])
        return main, main_grid, other, other_grid

    def view(self, q: dict) -> dict:
        """The answer to a choice: {"main": panel, "compare": panel, "ms": time}; a panel
        holds its title, grid (a PNG data URL), probabilities, or its error."""
        start = time.perf_counter()
        main, _, other, _ = self._grids(q)
        return {"main": main, "compare": other,
                "ms": round(1000 * (time.perf_counter() - start), 1)}

    def grid_png(self, q: dict) -> bytes:
        """Both grids stacked (the choice above its comparison) as a PNG; UserError when
        the choice itself cannot be drawn."""
        main, main_grid, other, other_grid = self._grids(q)
        if main_grid is None:
            raise UserError(main["error"])
        grids = [main_grid] + ([other_grid] if other_grid is not None else [])
        width = max(g.shape[1] for g in grids)
        grids = [np.pad(g, ((0, 0), (0, width - g.shape[1]), (0, 0))) for g in grids]
        return png_bytes(np.concatenate(grids, axis=0))

    def info(self) -> dict:
        saved = self.run.saved
        return {"run": saved.model_dir.name, "step": saved.step, "model": saved.model.name,
                "labels": self.run.label_names,
                "graph": [[node, parents] for node, parents in self.run.graph],
                "truth": self.run.has_truth, "size": self.size}

    def page(self) -> str:
        info = self.info()
        rows = "\n".join(
            f'<tr><th>{html.escape(name)}</th>' + "".join(
                f'<td><label><input type="radio" name="choice-{html.escape(name)}" '
                f'value="{value}"{" checked" if value == "free" else ""}> {text}</label></td>'
                for value, text in CHOICES) + "</tr>"
            for name in info["labels"])
        compare = "".join(f'<option value="{k}">{html.escape(v)}</option>'
                          for k, v in COMPARE_MODES.items())
        truth = ("the toy faces' exact causal model" if info["truth"]
                 else "no exact model for this data set")
        return (PAGE.replace("%TITLE%", html.escape(info["run"]))
                .replace("%STEP%", str(info["step"])).replace("%MODEL%", info["model"])
                .replace("%TRUTH%", truth).replace("%ROWS%", rows).replace("%COMPARE%", compare)
                .replace("%GRAPH%", graph_svg(self.run.graph))
                .replace("%INFO%", json.dumps(info)))


# ----------------------------------------------------------------------------- the graph
def graph_svg(graph) -> str:
    """The causal graph as SVG: columns by depth (longest path from a root), arrows from
    parents to children, one ``<g class="node" data-node=NAME>`` per node."""
    depth: dict[str, int] = {}
    for node, parents in graph:  # topological order: parents come first
        depth[node] = 1 + max((depth[p] for p in parents), default=-1)
    columns: dict[int, list[str]] = {}
    for node, _ in graph:
        columns.setdefault(depth[node], []).append(node)
    width_of = {node: 16 + 7.2 * len(node) for node, _ in graph}
    col_width = max(width_of.values()) + 60
    row_height, top = 38, 12
    pos = {}
    tallest = max(len(v) for v in columns.values())
    for d, nodes in columns.items():
        offset = (tallest - len(nodes)) * row_height / 2
        for i, node in enumerate(nodes):
            pos[node] = (10 + d * col_width, top + offset + i * row_height)
    edges, boxes = [], []
    for node, parents in graph:
        x1, y1 = pos[node]
        for p in parents:
            x0, y0 = pos[p]
            edges.append(f'<line x1="{x0 + width_of[p]:.0f}" y1="{y0 + 13:.0f}" '
                         f'x2="{x1 - 3:.0f}" y2="{y1 + 13:.0f}" marker-end="url(#arrow)"/>')
        name = html.escape(node)
        boxes.append(f'<g class="node" data-node="{name}"><rect x="{x1:.0f}" y="{y1:.0f}" '
                     f'width="{width_of[node]:.0f}" height="26" rx="6"/><text x="'
                     f'{x1 + width_of[node] / 2:.0f}" y="{y1 + 17:.0f}">{name}</text></g>')
    width = 20 + len(columns) * col_width - 60
    height = 2 * top + tallest * row_height
    return (f'<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}"><defs><marker '
            'id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>'
            f'<g class="edges">{"".join(edges)}</g>{"".join(boxes)}</svg>')


# ----------------------------------------------------------------------------- the server
class Handler(BaseHTTPRequestHandler):
    explorer: Explorer  # set on the subclass that make_server builds

    def log_message(self, format, *args):  # noqa: A002 - quiet: the page polls nothing
        pass

    def _send(self, code: int, body: bytes, kind: str, extra: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the page moved on
            pass

    def _json(self, code: int, content: dict) -> None:
        self._send(code, json.dumps(content).encode(), "application/json")

    def do_GET(self):  # noqa: N802 - the name http.server calls
        url = urlparse(self.path)
        query = parse_qs(url.query).get("q", [None])[0]
        try:
            if url.path == "/":
                self._send(200, self.explorer.page().encode(), "text/html; charset=utf-8")
            elif url.path == "/api/info":
                self._json(200, self.explorer.info())
            elif url.path == "/api/view":
                self._json(200, self.explorer.view(parse_query(query)))
            elif url.path == "/api/grid.png":
                q = parse_query(query)
                name = f"{self.explorer.run.saved.model_dir.name}_{api.describe(q['do'], q['cond'])}"
                name = "".join(c if c.isalnum() or c in "=_-" else "_" for c in name)
                self._send(200, self.explorer.grid_png(q), "image/png",
                           {"Content-Disposition": f'attachment; filename="{name}.png"'})
            else:
                self._json(404, {"error": f"no page {url.path}"})
        except UserError as err:
            self._json(400, {"error": str(err)})


def make_server(explorer: Explorer, port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for ``explorer`` on 127.0.0.1:port (a free port when 0), not yet
    serving: call ``serve_forever()`` (in a thread, for tests) and ``shutdown()``."""
    handler = type("ExplorerHandler", (Handler,), {"explorer": explorer})
    try:
        server = ThreadingHTTPServer((HOST, int(port)), handler)
    except OSError as err:
        raise UserError(f"--port {port}: cannot listen on {HOST}:{port} ({err.strerror}); "
                        "give another port, or 0 for a free one.") from None
    server.daemon_threads = True
    return server


def warm_up(explorer: Explorer) -> float:
    """Answer a first choice (and its comparison) so that tracing happens now, not on the
    user's first click; returns the seconds it took."""
    start = time.perf_counter()
    first = explorer.run.label_names[-1]
    explorer.view({"do": {first: 1}, "cond": {}, "seed": 0, "compare": "swap"})
    explorer.view({"do": {}, "cond": {}, "seed": 0, "compare": "none"})
    return time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m figure_scripts explore",
        description="Serve a local page (127.0.0.1 only) to choose do / given per node "
                    "and see the same individuals redrawn, with each label's probability.")
    parser.add_argument("--load_path", required=True,
                        help="A run folder written by main.py (logs/<run>) with an image model.")
    parser.add_argument("--port", type=int, default=0,
                        help="Port on 127.0.0.1; 0 picks a free one (default 0).")
    parser.add_argument("--size", type=int, default=16,
                        help="Individuals in each grid (default 16).")
    parser.add_argument("--cols", type=int, default=8, help="Columns of each grid (default 8).")
    parser.add_argument("--zoom", type=int, default=3,
                        help="Screen pixels per image pixel on the page (default 3).")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    explorer = Explorer(api.open_run(args.load_path), args.size, args.cols, args.zoom)
    server = make_server(explorer, args.port)
    seconds = warm_up(explorer)
    host, port = server.server_address[:2]
    print(f"explorer: http://{host}:{port}/  ({explorer.run.saved.model_dir.name}, step "
          f"{explorer.run.step}; ready in {seconds:.1f} s; Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("explorer: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


# ----------------------------------------------------------------------------- the page
PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>%TITLE% - CausalGAN explorer</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 18px; margin: 0 0 4px; } .sub { color: #666; margin-bottom: 12px; }
.top { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
#graph rect { fill: #f2f2f2; stroke: #888; } #graph text { text-anchor: middle; font-size: 12px; }
#graph .edges line { stroke: #999; } #graph marker path { fill: #999; }
#graph .do rect { fill: #ffd7c2; stroke: #d9480f; } #graph .given rect { fill: #cfe3ff; stroke: #1c5fd4; }
table.choices th { text-align: left; padding-right: 8px; font-weight: 600; }
table.choices td { padding: 0 4px; white-space: nowrap; }
.controls { margin: 12px 0; display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }
#message { min-height: 20px; color: #b00020; margin: 6px 0; white-space: pre-wrap; }
.grids { display: flex; gap: 24px; flex-wrap: wrap; }
figure { margin: 0; } figcaption { font-weight: 600; margin-bottom: 4px; }
figure img { image-rendering: pixelated; display: block; background: #000; }
figure img:not([src]) { display: none; }
.note { color: #666; font-size: 12px; }
table.bars td { padding: 1px 4px; } .bar { position: relative; width: 180px; height: 14px; background: #eee; }
.bar .fill { position: absolute; left: 0; top: 0; bottom: 0; }
.bar .truth { position: absolute; top: -2px; bottom: -2px; width: 2px; background: #000; }
.main .fill { background: #e8590c; } .compare .fill { background: #4c6ef5; }
</style></head><body>
<h1>%TITLE%</h1>
<div class="sub">%MODEL% at step %STEP%; truth: %TRUTH%. do(X=v) sets X and recomputes
only its descendants; given X=v keeps the individuals who have X=v.</div>
<div class="top">
  <div>%GRAPH%</div>
  <table class="choices">%ROWS%</table>
</div>
<div class="controls">
  <label>Seed <input id="seed" type="number" min="0" value="0" style="width: 7em"></label>
  <button id="next">other individuals</button>
  <button id="reset">all free</button>
  <label>Compare with <select id="compare">%COMPARE%</select></label>
  <a id="download" href="#" download>download the grids (PNG)</a>
  <span id="status" class="note">loading...</span>
</div>
<div id="message"></div>
<div class="grids">
  <figure class="main"><figcaption id="title-main"></figcaption><img id="grid-main" alt="the choice">
    <div id="note-main" class="note"></div></figure>
  <figure class="compare"><figcaption id="title-compare"></figcaption><img id="grid-compare" alt="the comparison">
    <div id="note-compare" class="note"></div></figure>
</div>
<h2 style="font-size: 15px">P(label = 1)</h2>
<div class="note">Bars: the controller (orange: the choice, blue: the comparison); black tick: the exact truth where known; numbers: controller / truth.</div>
<table class="bars" id="bars"></table>
<script>
const INFO = %INFO%;
let version = 0, asked = 0;
function state() {
  const q = {do: {}, cond: {}, seed: parseInt(document.getElementById("seed").value || "0", 10),
             compare: document.getElementById("compare").value};
  for (const name of INFO.labels) {
    const v = document.querySelector(`input[name="choice-${name}"]:checked`).value;
    if (v.startsWith("do")) q.do[name] = Number(v.slice(2));
    if (v.startsWith("given")) q.cond[name] = Number(v.slice(5));
  }
  return q;
}
function fmt(x) { return x === null || x === undefined ? "n/a" : x.toFixed(3); }
function paintGraph(q) {
  for (const g of document.querySelectorAll("#graph .node")) {
    const n = g.dataset.node;
    g.setAttribute("class", "node" + (n in q.do ? " do" : n in q.cond ? " given" : ""));
  }
}
function showPanel(which, panel) {
  document.getElementById("title-" + which).textContent =
    (which === "main" ? "Choice: " : "Comparison: ") + panel.title;
  const note = document.getElementById("note-" + which);
  if (panel.error) { note.textContent = panel.error; return false; }
  const img = document.getElementById("grid-" + which);
  img.src = panel.grid; img.style.width = panel.width + "px";
  note.textContent = panel.redrawn ? `${panel.redrawn} of ${INFO.size} individuals redrawn to meet the condition (it holds in ${(100 * panel.acceptance).toFixed(1)}% of the controller's draws)` : "";
  return true;
}
function showBars(main, other) {
  const rows = [`<tr><th></th><th colspan="2">${main.title}</th><th colspan="2">${other.title}</th></tr>`];
  for (const name of INFO.labels) {
    let cells = `<th>${name}</th>`;
    for (const [which, panel] of [["main", main], ["compare", other]]) {
      const p = panel.probabilities ? panel.probabilities[name] : null;
      const m = p ? p.model : null, t = p ? p.truth : null;
      cells += `<td><div class="bar ${which}"><div class="fill" style="width:${m === null ? 0 : 100 * m}%"></div>` +
        (t === null ? "" : `<div class="truth" style="left:${100 * t}%"></div>`) + `</div></td>` +
        `<td><span id="p-${which}-model-${name}">${fmt(m)}</span> / <span id="p-${which}-truth-${name}">${fmt(t)}</span></td>`;
    }
    rows.push(`<tr>${cells}</tr>`);
  }
  document.getElementById("bars").innerHTML = rows.join("");
}
async function redraw() {
  const q = state(), mine = ++asked, text = encodeURIComponent(JSON.stringify(q));
  paintGraph(q);
  document.getElementById("download").href = "/api/grid.png?q=" + text;
  document.getElementById("status").textContent = "drawing...";
  let answer;
  try {
    const response = await fetch("/api/view?q=" + text);
    answer = await response.json();
  } catch (err) { answer = {error: "the explorer does not answer (" + err + "); is it still running?"}; }
  if (mine !== asked) return;  // a newer choice is on its way
  const message = document.getElementById("message");
  if (answer.error) { message.textContent = answer.error; document.getElementById("status").textContent = "error"; }
  else {
    const ok = showPanel("main", answer.main);
    showPanel("compare", answer.compare);
    message.textContent = ok ? "" : answer.main.error;
    if (ok) showBars(answer.main, answer.compare);
    document.getElementById("status").textContent = `answered in ${answer.ms} ms`;
  }
  document.body.dataset.version = String(++version);
}
document.addEventListener("change", (e) => { if (e.target.matches("input, select")) redraw(); });
document.getElementById("next").onclick = () => {
  const s = document.getElementById("seed"); s.value = String(parseInt(s.value || "0", 10) + 1); redraw(); };
document.getElementById("reset").onclick = () => {
  for (const el of document.querySelectorAll('input[value="free"]')) el.checked = true; redraw(); };
redraw();
</script></body></html>
"""
