"""``report.html``: one self-contained page to look at a comparison in a browser, offline.

Written by ``basicsr compare`` (every model against the ground truth and the degraded input) and by
``basicsr test`` with ``val: report: true`` (one model). The page is plain HTML with an inline ``<style>``, an
inline ``<script>`` and its data as JSON in the page: nothing is fetched from anywhere but the images beside
it (relative links, ``images/<set>/<image>.<side>.png``), and an image file is only given to the browser when
it is shown (the two sides of the slider), so a large test set keeps a small page. It has:

* the summary table (metrics, published values, params, MACs with FFTs, latency, peak memory), sortable;
* per test set, a per-image table (every metric of every side), sortable; a row opens the image;
* the viewer: a before/after slider between any two of {ground truth, input, each model} (two menus), one
  zoom and pan for both sides (mouse wheel, drag, keys), the per-image numbers of both sides and their
  difference;
* the quality-versus-cost chart as inline SVG (a point names its model on hover or focus).

Every text from the data (model, set and image names) reaches the page through ``textContent`` or escaped
SVG text, never as markup.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ['ReportImage', 'ReportSet', 'Column', 'write_report', 'read_data', 'svg_chart', 'slug', 'path_template',
           'metric_columns', 'write_png', 'check_report_option', 'run_report_hook', 'write_run_report']

# side keys: 'gt' (ground truth), 'input' (the degraded input), 'm0', 'm1', ... (models)
GT, INPUT = 'gt', 'input'


@dataclass
class ReportImage:
    """One test image: its name, the file stem in the paths of its set, the display size (the ground
    truth's, or the output's without one) and the metric values of each side (``{side: {metric: value}}``)."""
    name: str
    stem: str
    width: int
    height: int
    values: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class ReportSet:
    """A test set: its name, where each side's image lives (``{side: template}``, relative URL with ``{}``
    for the image's stem, see :func:`path_template`) and its images in dataset order."""
    name: str
    paths: dict[str, str]
    images: list[ReportImage] = field(default_factory=list)


@dataclass
class Column:
    """A summary-table column: ``fmt`` is 'text', 'int' (thousands separators) or a number of decimals."""
    key: str
    label: str
    fmt: str | int = 'text'


_SAFE = re.compile(r'[^A-Za-z0-9._-]+')


def slug(name: str, taken: set[str] | None = None) -> str:
    """A file-name-safe form of ``name`` (letters, digits, ``._-``), unique within ``taken`` (updated)."""
    base = _SAFE.sub('_', name).strip('._') or 'x'
    out, i = base, 1
    while taken is not None and out in taken:
        i += 1
        out = f'{base}_{i}'
    if taken is not None:
        taken.add(out)
    return out


def path_template(prefix: str, suffix: str) -> str:
    """``prefix{}suffix`` as a relative URL: the fixed parts percent-encoded (``/`` kept); the page puts the
    percent-encoded image stem in place of ``{}``."""
    def enc(part: str) -> str:
        return urllib.parse.quote(part.replace(os.sep, '/'), safe='/')
    return f'{enc(prefix)}{{}}{enc(suffix)}'


def _number(value: Any) -> Any:
    """A JSON-safe metric value: NaN/None -> null, ±inf -> the string the page reads as ±Infinity."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)  # params, image counts: exact
    value = float(value)
    if math.isnan(value):
        return None
    if math.isinf(value):
        return 'Infinity' if value > 0 else '-Infinity'
    return float(f'{value:.6g}')


def _metric_digits(key: str) -> int:
    return 2 if 'psnr' in key.lower() else 4


def metric_columns(metric_opts: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    """``(key, label, decimals, better)`` per metric; better is 1 (higher) or -1 (lower: LPIPS, or a
    metric option ``better: lower``)."""
    out = []
    for key, opt_ in metric_opts.items():
        better = (opt_ or {}).get('better') if isinstance(opt_, dict) else None
        lower = better == 'lower' or (better is None and 'lpips' in key.lower())
        out.append((key, key.upper(), _metric_digits(key), -1 if lower else 1))
    return out


# ----------------------------------------------------------------------------------------------- the chart

_PALETTE = ('#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22',
            '#17becf')


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.12 or max(abs(hi) * 0.1, 1e-3)
    return lo - pad, hi + pad


def _fmt_tick(v: float) -> str:
    return f'{v:,.10g}' if abs(v) >= 1 or v == 0 else f'{v:.3g}'


def svg_chart(points: Sequence[dict[str, Any]], axes: Sequence[tuple[str, str]], y_key: str, y_label: str) -> str:
    """Inline SVG scatter plots of ``y_key`` against each ``(x_key, x_label)`` of ``axes``, one colour per
    dataset. A point is ``{'model', 'dataset', y_key, x_key...}``; it names its model and values on hover
    (``<title>`` and a label shown by CSS). Points without a finite value are left out."""
    pw, ph, ml, mr, mt, mb = 420, 280, 64, 16, 14, 46
    datasets = list(dict.fromkeys(p['dataset'] for p in points))
    colour = {d: _PALETTE[i % len(_PALETTE)] for i, d in enumerate(datasets)}
    esc = html.escape
    parts = []
    for k, (x_key, x_label) in enumerate(axes):
        pts = [p for p in points
               if all(isinstance(p.get(a), (int, float)) and math.isfinite(p[a]) for a in (x_key, y_key))]
        ox = k * (pw + 10)
        g = [f'<g transform="translate({ox},0)">', f'<rect class="frame" x="{ml}" y="{mt}" width="{pw - ml - mr}" '
             f'height="{ph - mt - mb}"/>']
        if pts:
            x0, x1 = _range([p[x_key] for p in pts])
            y0, y1 = _range([p[y_key] for p in pts])

            def sx(v, x0=x0, x1=x1):
                return ml + (v - x0) / (x1 - x0) * (pw - ml - mr)

            def sy(v, y0=y0, y1=y1):
                return ph - mb - (v - y0) / (y1 - y0) * (ph - mt - mb)

            for t in _ticks(x0, x1):
                g.append(f'<line class="grid" x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{mt}" y2="{ph - mb}"/>'
                         f'<text class="tick" x="{sx(t):.1f}" y="{ph - mb + 14}" text-anchor="middle">'
                         f'{esc(_fmt_tick(t))}</text>')
            for t in _ticks(y0, y1):
                g.append(f'<line class="grid" x1="{ml}" x2="{pw - mr}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>'
                         f'<text class="tick" x="{ml - 4}" y="{sy(t) + 4:.1f}" text-anchor="end">'
                         f'{esc(_fmt_tick(t))}</text>')
            for p in pts:
                x, y = sx(p[x_key]), sy(p[y_key])
                tip = f"{p['model']} ({p['dataset']}): {y_label} {p[y_key]:.4g}, {x_label} {p[x_key]:.4g}"
                anchor = 'end' if x > pw / 2 else 'start'
                dx = -8 if anchor == 'end' else 8
                g.append(f'<g class="pt" tabindex="0" data-model="{esc(p["model"])}"><title>{esc(tip)}</title>'
                         f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{colour[p["dataset"]]}"/>'
                         f'<text class="lbl" x="{x + dx:.1f}" y="{y - 8:.1f}" text-anchor="{anchor}">'
                         f'{esc(p["model"])}</text></g>')
        else:
            g.append(f'<text class="tick" x="{pw / 2}" y="{ph / 2}" text-anchor="middle">no finite values</text>')
        g.append(f'<text class="axis" x="{(ml + pw - mr) / 2}" y="{ph - 10}" text-anchor="middle">{esc(x_label)}</text>'
                 f'<text class="axis" transform="translate(14,{(mt + ph - mb) / 2}) rotate(-90)" '
                 f'text-anchor="middle">{esc(y_label)}</text></g>')
        parts += g
    legend = ''.join(f'<g transform="translate({ml + 130 * i},{ph + 8})">'
                     f'<circle cx="6" cy="0" r="5" fill="{colour[d]}"/>'
                     f'<text class="tick" x="16" y="4">{esc(d)}</text></g>' for i, d in enumerate(datasets))
    width = len(axes) * (pw + 10)
    return (f'<svg id="chart-svg" viewBox="0 0 {width} {ph + 20}" width="{width}" height="{ph + 20}" role="img" '
            f'aria-label="{esc(y_label)} against cost">{"".join(parts)}{legend}</svg>')


# ------------------------------------------------------------------------------------------------ the page

def read_data(page: str | os.PathLike) -> dict[str, Any]:
    """The data a report page carries (its JSON block), from the page's path or text."""
    text = page if isinstance(page, str) and '<html' in page else Path(page).read_text(encoding='utf-8')
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    if not found:
        raise ValueError('not a report page: no report-data block')
    return json.loads(found.group(1))


def _json_for_script(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(',', ':'), allow_nan=False)
    # inside <script>: no '</' (end of the element) and no '<!--'
    return text.replace('<', '\\u003c').replace('\u2028', '\\u2028').replace('\u2029', '\\u2029')


def write_report(path: str | os.PathLike, *, title: str, intro: Sequence[str], summary_columns: Sequence[Column],
                 summary_rows: Sequence[dict[str, Any]], metrics: Sequence[tuple[str, str, int, int]],
                 sides: Sequence[tuple[str, str]], sets: Sequence[ReportSet], pair: tuple[str, str],
                 chart_svg: str | None = None, chart_png: str | None = None) -> int:
    """Write the page to ``path`` (the image templates of ``sets`` are relative to its folder); returns its
    size in bytes. ``sides`` are ``(key, label)`` in menu order; ``pair`` is the sides shown first."""
    metric_keys = [m[0] for m in metrics]
    data = {
        'title': title,
        'sides': [list(s) for s in sides],
        'metrics': [list(m) for m in metrics],
        'pair': list(pair),
        'summary': {'cols': [[c.key, c.label, c.fmt] for c in summary_columns],
                    'rows': [[r.get(c.key) if c.fmt == 'text' or c.key not in r else _number(r[c.key])
                              for c in summary_columns] for r in summary_rows]},
        'sets': [{'name': s.name, 'paths': s.paths,
                  'images': [dict({'n': im.name, 'w': im.width, 'h': im.height,
                                   'v': {side: [_number(vals.get(k)) for k in metric_keys]
                                         for side, vals in im.values.items()}},
                                  **({'f': im.stem} if im.stem != im.name else {}))
                             for im in s.images]} for s in sets],
    }
    chart = ''
    if chart_svg or chart_png:
        body = chart_svg or f'<img src="{html.escape(chart_png)}" alt="quality against cost">'
        chart = f'<section id="chart"><h2>Quality against cost</h2>{body}</section>'
    parts = {'TITLE': html.escape(title), 'INTRO': ''.join(f'<p>{html.escape(line)}</p>' for line in intro),
             'CHART': chart, 'DATA': _json_for_script(data)}
    page = re.sub(r'\{\{(TITLE|INTRO|CHART|DATA)\}\}', lambda m: parts[m.group(1)], _PAGE)  # one pass
    Path(path).write_text(page, encoding='utf-8')
    return len(page.encode('utf-8'))


_PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{{TITLE}}</title>
<style>
:root{--fg:#1b1f24;--muted:#5b6470;--line:#d6dbe1;--hi:#fff6d6;--accent:#0b63c4}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);margin:0 auto;
padding:12px 20px 40px;max-width:1400px}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:22px 0 8px}
p{margin:4px 0;color:var(--muted)}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:4px 0}
th,td{border-bottom:1px solid var(--line);padding:3px 9px;text-align:right;white-space:nowrap}
th{background:#f3f5f7;position:sticky;top:0;user-select:none}
th.sortable{cursor:pointer}th.sortable:hover{background:#e6eaef}
th[aria-sort=ascending]::after{content:" \25B2";font-size:10px}th[aria-sort=descending]::after{content:" \25BC";font-size:10px}
td.t,th.t{text-align:left}
.scroll{overflow:auto;max-height:480px;border:1px solid var(--line)}
tbody tr.open{cursor:pointer}tbody tr.open:hover{background:#eef4fc}tbody tr.current{background:var(--hi)}
td.best{font-weight:700}
.controls{display:flex;flex-wrap:wrap;gap:6px 14px;align-items:center;margin:6px 0}
.controls label{color:var(--muted)}
select,button{font:inherit;padding:2px 6px}
#viewer{position:relative;overflow:hidden;height:min(68vh,640px);min-height:240px;border:1px solid var(--line);
cursor:grab;touch-action:none;user-select:none;outline:none;
background:repeating-conic-gradient(#e9ebee 0% 25%,#f7f8f9 0% 50%) 0 0/20px 20px}
#viewer:focus-visible{box-shadow:0 0 0 3px #8ab4f8}
#viewer.panning{cursor:grabbing}
.layer{position:absolute;inset:0;pointer-events:none}
.layer img{position:absolute;left:0;top:0;transform-origin:0 0;max-width:none;max-height:none}
#divider{position:absolute;top:0;bottom:0;width:0;border-left:2px solid #fff;box-shadow:0 0 0 1px rgba(0,0,0,.35)}
#handle{position:absolute;top:0;bottom:0;left:-11px;width:20px;cursor:ew-resize}
#handle::after{content:"\2194";position:absolute;top:50%;left:-4px;width:28px;height:28px;margin-top:-14px;
border-radius:50%;background:#fff;color:#333;
font-size:16px;line-height:28px;text-align:center;box-shadow:0 1px 4px rgba(0,0,0,.4)}
.tag{position:absolute;top:8px;padding:2px 8px;border-radius:3px;background:rgba(0,0,0,.62);color:#fff;font-size:12px;pointer-events:none}
#tag-a{left:8px}#tag-b{right:8px}
#zoom{min-width:52px;display:inline-block;color:var(--muted)}
#split{width:260px}
#numbers td:first-child{text-align:left}
.help{font-size:12px}
#chart svg{max-width:100%;height:auto;font-size:11px}
#chart .frame{fill:none;stroke:#9aa3ad}#chart .grid{stroke:#e3e6ea}#chart .tick{fill:#5b6470}#chart .axis{fill:#1b1f24;font-size:12px}
#chart .pt{cursor:default;outline:none}#chart .pt circle{stroke:#fff;stroke-width:1.5}
#chart .pt .lbl{opacity:0;font-size:12px;paint-order:stroke;stroke:#fff;stroke-width:3px;fill:#1b1f24}
#chart .pt:hover .lbl,#chart .pt:focus .lbl{opacity:1}#chart .pt:hover circle,#chart .pt:focus circle{stroke:#000}
</style>
</head>
<body>
<h1>{{TITLE}}</h1>
{{INTRO}}
<noscript><p>This page needs JavaScript for its tables and viewer; the same numbers are in the Markdown and CSV files beside it.</p></noscript>
<section id="summary"><h2>Summary</h2><div class="scroll"><table id="summary-table"></table></div></section>
<section id="view"><h2>Compare images</h2>
<div class="controls">
<label id="set-label">set <select id="set"></select></label>
<label>image <select id="image"></select></label>
<button id="prev" title="previous image (p)">&#9664;</button><button id="next" title="next image (n)">&#9654;</button>
<label>left <select id="side-a"></select></label>
<button id="swap" title="swap the sides (s)">&#8646;</button>
<label>right <select id="side-b"></select></label>
</div>
<div id="viewer" tabindex="0" aria-label="image comparison: drag to pan, wheel or + and - to zoom, [ and ] move the split">
<div class="layer" id="layer-a"><img id="img-a" alt="" draggable="false"></div>
<div class="layer" id="layer-b"><img id="img-b" alt="" draggable="false"></div>
<div id="divider"><div id="handle" title="drag to move the split"></div></div>
<span class="tag" id="tag-a"></span><span class="tag" id="tag-b"></span>
</div>
<div class="controls">
<label>split <input type="range" id="split" min="0" max="1000" value="500"></label>
<button id="fit" title="fit (0)">fit</button><button id="one" title="one image pixel per screen pixel (1)">1:1</button>
<button id="zoom-in" title="zoom in (+)">+</button><button id="zoom-out" title="zoom out (-)">&minus;</button>
<span id="zoom"></span>
</div>
<p class="help">Wheel: zoom at the pointer. Drag: pan (both sides together). Drag the &#8596; handle or the split
bar to move the split. Keys (click the image first): + and - zoom, arrows pan, [ and ] move the split, 0 fit, 1 1:1, s swap, n and p next and previous image.</p>
<table id="numbers"></table>
</section>
{{CHART}}
<section id="per-image"></section>
<script type="application/json" id="report-data">{{DATA}}</script>
<script>
(function () {
'use strict';
var D = JSON.parse(document.getElementById('report-data').textContent);
function $(id) { return document.getElementById(id); }
function el(tag, text, cls) {
  var e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function num(v) { return v === null || v === undefined ? NaN : Number(v); }
function fmt(v, f) {
  if (f === 'text') return v === null || v === undefined || v === '' ? '\u2013' : String(v);
  var n = num(v);
  if (isNaN(n)) return '\u2013';
  if (!isFinite(n)) return n > 0 ? '\u221E' : '-\u221E';
  if (f === 'int') return Math.round(n).toLocaleString('en-US');
  return n.toFixed(f);
}
var SIDE = {}; D.sides.forEach(function (s) { SIDE[s[0]] = s[1]; });

// ---- sortable tables: cols [{label, fmt, get(row), group, best}], rows: any objects
function sortableTable(table, cols, rows, onOpen) {
  table.textContent = '';
  var thead = el('thead'), tbody = el('tbody');
  var groups = cols.some(function (c) { return c.group; });
  if (groups) {
    var gr = el('tr'), last = null, cell = null;
    cols.forEach(function (c) {
      if (cell && c.group === last) { cell.colSpan += 1; return; }
      cell = el('th', c.group || '', 't'); cell.colSpan = 1; gr.appendChild(cell); last = c.group;
    });
    thead.appendChild(gr);
  }
  var hr = el('tr'), state = {col: -1, dir: 1};
  cols.forEach(function (c, j) {
    var th = el('th', c.label, 'sortable' + (c.fmt === 'text' ? ' t' : ''));
    th.tabIndex = 0; th.setAttribute('aria-sort', 'none'); th.title = 'sort by ' + (c.group ? c.group + ' ' : '') + c.label;
    function go() { state.dir = state.col === j ? -state.dir : (c.fmt === 'text' ? 1 : (c.better || 1) * -1); state.col = j; render(); }
    th.addEventListener('click', go);
    th.addEventListener('keydown', function (e) { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); go(); } });
    hr.appendChild(th);
  });
  thead.appendChild(hr); table.appendChild(thead); table.appendChild(tbody);
  var order = rows.map(function (r, i) { return i; });
  var trs = rows.map(function (r, i) {
    var tr = el('tr');
    cols.forEach(function (c) {
      var v = c.get(r), td = el('td', fmt(v, c.fmt), c.fmt === 'text' ? 't' : '');
      if (c.best && c.best(r, v)) td.classList.add('best');
      tr.appendChild(td);
    });
    if (onOpen) {
      tr.className = 'open'; tr.tabIndex = 0; tr.title = 'open this image';
      tr.addEventListener('click', function () { onOpen(r, i); });
      tr.addEventListener('keydown', function (e) { if (e.key === 'Enter') onOpen(r, i); });
    }
    tr.dataset.row = i;
    return tr;
  });
  function key(i, j) {
    var c = cols[j], v = c.get(rows[i]);
    return c.fmt === 'text' ? String(v === null || v === undefined ? '' : v) : num(v);
  }
  function render() {
    if (state.col >= 0) {
      order.sort(function (a, b) {
        var x = key(a, state.col), y = key(b, state.col);
        if (typeof x === 'number') {
          if (isNaN(x) || isNaN(y)) return isNaN(x) === isNaN(y) ? a - b : (isNaN(x) ? 1 : -1);
          return x === y ? a - b : (x < y ? -state.dir : state.dir);
        }
        var r = x.localeCompare(y, undefined, {numeric: true});
        return r === 0 ? a - b : r * state.dir;
      });
    }
    Array.prototype.forEach.call(hr.children, function (th, j) {
      th.setAttribute('aria-sort', j === state.col ? (state.dir > 0 ? 'ascending' : 'descending') : 'none');
    });
    order.forEach(function (i) { tbody.appendChild(trs[i]); });
  }
  render();
  return trs;
}

// ---- summary
(function () {
  var cols = D.summary.cols.filter(function (c, j) {
    return D.summary.rows.some(function (r) { return r[j] !== null && r[j] !== undefined && r[j] !== ''; });
  }).map(function (c) {
    var j = D.summary.cols.indexOf(c);
    var m = D.metrics.filter(function (x) { return x[0] === c[0]; })[0];
    return {label: c[1], fmt: c[2], better: m ? m[3] : 1, get: function (r) { return r[j]; }};
  });
  sortableTable($('summary-table'), cols, D.summary.rows);
})();

// ---- per-image tables
var rowsBySet = [];
D.sets.forEach(function (s, si) {
  var sec = el('div'); sec.appendChild(el('h2', s.name + ': every image (' + s.images.length + ')'));
  var scored = D.sides.filter(function (sd) { return s.images.some(function (im) { return im.v[sd[0]]; }); });
  var cols = [{label: 'image', fmt: 'text', get: function (im) { return im.n; }}];
  D.metrics.forEach(function (m, k) {
    scored.forEach(function (sd) {
      cols.push({group: m[1], label: SIDE[sd[0]], fmt: m[2], better: m[3],
        get: function (im) { var v = im.v[sd[0]]; return v ? v[k] : null; },
        best: function (im, v) {
          if (scored.length < 2 || isNaN(num(v))) return false;
          return scored.every(function (o) {
            var w = im.v[o[0]]; w = w ? num(w[k]) : NaN;
            return isNaN(w) || (m[3] > 0 ? num(v) >= w : num(v) <= w);
          });
        }});
    });
  });
  var wrap = el('div', null, 'scroll'), table = el('table'); table.id = 'images-' + si; table.className = 'per-image';
  wrap.appendChild(table); sec.appendChild(wrap); $('per-image').appendChild(sec);
  rowsBySet.push(sortableTable(table, cols, s.images, function (im, i) { open(si, i); $('view').scrollIntoView({block: 'start'}); }));
});
if (!D.sets.length) $('view').hidden = true;

// ---- the viewer: both images share one transform; the right one is clipped left of the split
var V = {set: 0, image: 0, a: D.pair[0], b: D.pair[1], s: 1, tx: 0, ty: 0, split: 0.5, w: 0, h: 0, fitted: false};
var viewer = $('viewer'), imgA = $('img-a'), imgB = $('img-b');
function setOf() { return D.sets[V.set]; }
function imageOf() { return setOf().images[V.image]; }
function srcOf(side) {
  var s = setOf(), im = imageOf(), t = s.paths[side];
  return t ? t.replace('{}', encodeURIComponent(im.f || im.n)) : '';
}
function apply() {
  var W = viewer.clientWidth, t = 'translate(' + V.tx + 'px,' + V.ty + 'px) scale(' + V.s + ')';
  [imgA, imgB].forEach(function (im) {
    im.style.transform = t;
    var mag = V.s * V.w / (im.naturalWidth || V.w);
    im.style.imageRendering = mag >= 1 ? 'pixelated' : 'auto';
  });
  var x = Math.round(V.split * W);
  $('layer-b').style.clipPath = 'inset(0 0 0 ' + x + 'px)';
  $('divider').style.left = x + 'px';
  $('split').value = Math.round(V.split * 1000);
  $('zoom').textContent = (V.s * 100).toFixed(V.s < 0.1 ? 1 : 0) + '%';
}
function fit() {
  var W = viewer.clientWidth, H = viewer.clientHeight;
  V.s = Math.min(W / V.w, H / V.h);
  V.tx = (W - V.w * V.s) / 2; V.ty = (H - V.h * V.s) / 2; V.fitted = true; apply();
}
function zoomAt(f, cx, cy) {
  var W = viewer.clientWidth, H = viewer.clientHeight;
  var lo = Math.min(W / V.w, H / V.h) / 4, ns = Math.max(lo, Math.min(64, V.s * f));
  f = ns / V.s; V.s = ns; V.tx = cx - (cx - V.tx) * f; V.ty = cy - (cy - V.ty) * f; V.fitted = false; apply();
}
function showSides() {
  [['a', imgA, 'side-a', 'tag-a'], ['b', imgB, 'side-b', 'tag-b']].forEach(function (x) {
    var side = V[x[0]], src = srcOf(side);
    x[1].width = V.w; x[1].height = V.h;
    if (x[1].getAttribute('src') !== src) { x[1].onload = apply; x[1].setAttribute('src', src); }
    $(x[2]).value = side;
    $(x[3]).textContent = (x[0] === 'a' ? '\u25C0 ' : '') + SIDE[side] + (x[0] === 'b' ? ' \u25B6' : '');
  });
  numbers(); remember(); apply();
}
function numbers() {
  var t = $('numbers'), im = imageOf(); t.textContent = '';
  var hr = el('tr'); hr.appendChild(el('th', V.image + 1 + ' / ' + setOf().images.length + ': ' + im.n, 't'));
  D.metrics.forEach(function (m) { hr.appendChild(el('th', m[1])); });
  var thead = el('thead'); thead.appendChild(hr); t.appendChild(thead);
  var tb = el('tbody'), vals = {};
  [['left', V.a], ['right', V.b]].forEach(function (x) {
    var tr = el('tr'), v = im.v[x[1]]; vals[x[0]] = v;
    tr.appendChild(el('td', x[0] + ': ' + SIDE[x[1]], 't'));
    D.metrics.forEach(function (m, k) { tr.appendChild(el('td', x[1] === 'gt' ? 'reference' : fmt(v ? v[k] : null, m[2]))); });
    tb.appendChild(tr);
  });
  if (vals.left && vals.right) {
    var tr = el('tr'); tr.appendChild(el('td', 'right \u2212 left', 't'));
    D.metrics.forEach(function (m, k) {
      var d = num(vals.right[k]) - num(vals.left[k]);
      tr.appendChild(el('td', isNaN(d) ? '\u2013' : (d > 0 ? '+' : '') + fmt(d, m[2])));
    });
    tb.appendChild(tr);
  }
  t.appendChild(tb);
}
function remember() {
  try {  // a link to what is shown (reload, share)
    history.replaceState(null, '', '#set=' + V.set + '&image=' + V.image + '&left=' + encodeURIComponent(V.a) +
                         '&right=' + encodeURIComponent(V.b));
  } catch (e) { /* some browsers refuse it on file: pages */ }
}
function open(si, i) {
  var same = V.set === si;
  V.set = si; V.image = i;
  var s = setOf(), im = imageOf();
  if (!same) fillMenus();
  if (!s.paths[V.a]) V.a = firstSide(V.b);
  if (!s.paths[V.b]) V.b = firstSide(V.a);
  var resize = im.w !== V.w || im.h !== V.h;
  V.w = im.w; V.h = im.h;
  $('set').value = si; $('image').value = i;
  rowsBySet.forEach(function (trs, k) { trs.forEach(function (tr, j) { tr.classList.toggle('current', k === si && j === i); }); });
  if (resize || V.fitted) fit();
  showSides();
}
function firstSide(not) {
  var p = setOf().paths; return D.sides.map(function (s) { return s[0]; }).filter(function (k) { return p[k] && k !== not; })[0] || not;
}
function fillMenus() {
  var s = setOf();
  ['side-a', 'side-b'].forEach(function (id) {
    var sel = $(id); sel.textContent = '';
    D.sides.forEach(function (sd) { if (s.paths[sd[0]]) { var o = el('option', sd[1]); o.value = sd[0]; sel.appendChild(o); } });
  });
  var im = $('image'); im.textContent = '';
  s.images.forEach(function (x, i) { var o = el('option', x.n); o.value = i; im.appendChild(o); });
}
if (D.sets.length) {
  var setSel = $('set');
  D.sets.forEach(function (s, i) { var o = el('option', s.name); o.value = i; setSel.appendChild(o); });
  if (D.sets.length < 2) $('set-label').hidden = true;
  setSel.addEventListener('change', function () { V.set = -1; open(Number(setSel.value), 0); });
  $('image').addEventListener('change', function () { open(V.set, Number($('image').value)); });
  $('side-a').addEventListener('change', function () { V.a = $('side-a').value; showSides(); });
  $('side-b').addEventListener('change', function () { V.b = $('side-b').value; showSides(); });
  function step(d) { var n = setOf().images.length; open(V.set, (V.image + d + n) % n); }
  function swap() { var t = V.a; V.a = V.b; V.b = t; showSides(); }
  $('prev').addEventListener('click', function () { step(-1); });
  $('next').addEventListener('click', function () { step(1); });
  $('swap').addEventListener('click', swap);
  $('fit').addEventListener('click', fit);
  function centre() { return [viewer.clientWidth / 2, viewer.clientHeight / 2]; }
  function one() { var c = centre(); zoomAt(1 / V.s, c[0], c[1]); }
  $('one').addEventListener('click', one);
  $('zoom-in').addEventListener('click', function () { var c = centre(); zoomAt(1.25, c[0], c[1]); });
  $('zoom-out').addEventListener('click', function () { var c = centre(); zoomAt(0.8, c[0], c[1]); });
  $('split').addEventListener('input', function () { V.split = Number($('split').value) / 1000; apply(); });
  viewer.addEventListener('wheel', function (e) {
    e.preventDefault();
    var r = viewer.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.002)), e.clientX - r.left, e.clientY - r.top);
  }, {passive: false});
  var drag = null;
  viewer.addEventListener('pointerdown', function (e) {
    if (e.button !== 0) return;
    viewer.focus({preventScroll: true});
    drag = {mode: e.target === $('handle') ? 'split' : 'pan', x: e.clientX, y: e.clientY};
    if (drag.mode === 'pan') viewer.classList.add('panning');
    viewer.setPointerCapture(e.pointerId); e.preventDefault();
  });
  viewer.addEventListener('pointermove', function (e) {
    if (!drag) return;
    if (drag.mode === 'split') {
      var r = viewer.getBoundingClientRect();
      V.split = Math.max(0, Math.min(1, (e.clientX - r.left) / r.width));
    } else { V.tx += e.clientX - drag.x; V.ty += e.clientY - drag.y; V.fitted = false; }
    drag.x = e.clientX; drag.y = e.clientY; apply();
  });
  function end() { drag = null; viewer.classList.remove('panning'); }
  viewer.addEventListener('pointerup', end);
  viewer.addEventListener('pointercancel', end);
  viewer.addEventListener('keydown', function (e) {
    var c = centre(), k = e.key, p = 40;
    if (k === '+' || k === '=') zoomAt(1.25, c[0], c[1]);
    else if (k === '-' || k === '_') zoomAt(0.8, c[0], c[1]);
    else if (k === 'ArrowLeft') { V.tx += p; apply(); } else if (k === 'ArrowRight') { V.tx -= p; apply(); }
    else if (k === 'ArrowUp') { V.ty += p; apply(); } else if (k === 'ArrowDown') { V.ty -= p; apply(); }
    else if (k === '[') { V.split = Math.max(0, V.split - 0.05); apply(); }
    else if (k === ']') { V.split = Math.min(1, V.split + 0.05); apply(); }
    else if (k === '0') fit(); else if (k === '1') one(); else if (k === 's') swap();
    else if (k === 'n') step(1); else if (k === 'p') step(-1);
    else return;
    e.preventDefault();
  });
  window.addEventListener('resize', function () { if (V.fitted) fit(); else apply(); });
  function fromHash() {
    var q = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
      var p = kv.split('=');
      if (p[0]) { try { q[p[0]] = decodeURIComponent(p[1] || ''); } catch (e) { /* a mangled link */ } }
    });
    var si = Number(q.set), i = Number(q.image);
    si = si >= 0 && si < D.sets.length ? si : 0;
    i = i >= 0 && i < D.sets[si].images.length ? i : 0;
    if (SIDE[q.left]) V.a = q.left;
    if (SIDE[q.right]) V.b = q.right;
    V.set = -1; open(si, i);
  }
  fromHash();
}
// for tests and scripts: where an image pixel is on the screen
window.reportView = function () {
  return {set: V.set, image: V.image, left: V.a, right: V.b, scale: V.s, tx: V.tx, ty: V.ty, split: V.split,
          width: V.w, height: V.h};
};
})();
</script>
</body>
</html>
"""


# -------------------------------------------------------------------------------------- basicsr test's page

def check_report_option(opt: dict[str, Any], file: str) -> bool:
    """``val: report`` of a test option file: false/absent, or true together with ``val: save_img: true``
    (the page shows the saved outputs). Raises :class:`~converse_plugin.errors.OptionError` otherwise."""
    from converse_plugin.errors import OptionError

    val = opt.get('val') or {}
    report = val.get('report', False)
    if report is None:
        return False
    if not isinstance(report, bool):
        raise OptionError(f'{file}: val:report must be true or false, got {report!r}')
    if report and not val.get('save_img'):
        raise OptionError(f'{file}: val:report is true but val:save_img is not: the page shows the saved images; '
                          'set val:save_img: true (and val:suffix)')
    return report


def write_png(path: Path, img: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f'could not write {path}')


def run_report_hook(opt: dict[str, Any], file: str) -> Callable[[Sequence[Any], Callable[[str], None]], Path] | None:
    """``basicsr test``'s hook for ``val: report: true``: checks the option now (before anything runs) and
    returns the function to call after the test sets ran (None when off, or on ranks other than 0)."""
    if not check_report_option(opt, file) or opt.get('rank', 0) != 0:
        return None

    def write(loaders: Sequence[Any], log: Callable[[str], None] = print) -> Path:
        path = write_run_report(opt, loaders)
        log(f'Report (open in a browser): {path}')
        return path

    return write


def write_run_report(opt: dict[str, Any], loaders: Sequence[Any]) -> Path:
    """``<results_root>/report.html`` for one model: every test image's ground truth and input (written to
    ``images/``), the output ``basicsr test`` saved (``visualization/``, linked), and per-image metrics
    computed from the saved output with ``val: metrics`` (the same uint8 image the test scored, so the same
    values; the input is scored too when it has the ground truth's size)."""
    import cv2
    from basicsr.metrics import calculate_metric
    from basicsr.utils import tensor2img

    root = Path(opt['path']['results_root'])
    vis = Path(opt['path']['visualization'])
    metric_opts = dict(opt['val'].get('metrics') or {})
    mcols = metric_columns(metric_opts)
    suffix = opt['val'].get('suffix') or opt['name']
    label = str(opt['name'])
    taken: set[str] = set()
    sets, summary = [], []
    for loader in loaders:
        dataset = loader.dataset
        name = str(dataset.opt['name'])
        folder = slug(name, taken)
        out_rel = os.path.relpath(vis / name, root)
        report_set = ReportSet(name, {GT: path_template(f'images/{folder}/', '.gt.png'),
                                      INPUT: path_template(f'images/{folder}/', '.input.png'),
                                      'm0': path_template(f'{out_rel}/', f'_{suffix}.png')})
        has_gt = False
        sums: dict[str, float] = {}
        for idx in range(len(dataset)):
            item = dataset[idx]
            img_name = os.path.splitext(os.path.basename(item['lq_path']))[0]
            lq = tensor2img(item['lq'])
            gt = tensor2img(item['gt']) if 'gt' in item else None
            has_gt |= gt is not None
            saved = vis / name / f'{img_name}_{suffix}.png'
            out = cv2.imread(str(saved), cv2.IMREAD_UNCHANGED)
            if out is None:
                raise OSError(f'val:report: {saved} is missing (basicsr test saves it with val:save_img: true)')
            ref = gt if gt is not None else out
            image = ReportImage(img_name, img_name, int(ref.shape[1]), int(ref.shape[0]))
            if gt is not None:
                write_png(root / 'images' / folder / f'{img_name}.gt.png', gt)
            write_png(root / 'images' / folder / f'{img_name}.input.png', lq)
            if gt is not None and metric_opts:
                image.values['m0'] = {k: float(calculate_metric({'img': out, 'img2': gt}, dict(o)))
                                      for k, o in metric_opts.items()}
                for k, v in image.values['m0'].items():
                    sums[k] = sums.get(k, 0.0) + v
                if lq.shape == gt.shape:
                    image.values[INPUT] = {k: float(calculate_metric({'img': lq, 'img2': gt}, dict(o)))
                                           for k, o in metric_opts.items()}
            report_set.images.append(image)
        if not has_gt:
            del report_set.paths[GT]
        sets.append(report_set)
        n = len(report_set.images)
        summary.append({'model': label, 'dataset': name, 'images': n, **{k: v / max(n, 1) for k, v in sums.items()}})
    columns = [Column('model', 'model'), Column('dataset', 'dataset'), Column('images', 'images', 'int'),
               *(Column(k, lab, d) for k, lab, d, _ in mcols)]
    sides = [(GT, 'ground truth'), (INPUT, 'input'), ('m0', label)]
    page = root / 'report.html'
    write_report(page, title=f'basicsr test: {label}', intro=[
        f'Model {label}; option file results in {root}. Per-image numbers recomputed from the saved outputs '
        f'with val:metrics ({", ".join(metric_opts) or "none"}); the means equal the test log\'s.'],
        summary_columns=columns, summary_rows=summary, metrics=mcols, sides=sides, sets=sets,
        pair=(INPUT, 'm0'))
    return page
