"""``GET /``: the dashboard page — one video's merged counts over time as an SVG bar chart (the
batch part and the speed part in two colours, buckets without an answer in grey, the batch
horizon drawn as a line), the top list for the same range (a row selects its video), and the
freshness of both layers. Static HTML and script; every number on it comes from the JSON API
(``/v1/videos/{id}/counts``, ``/v1/top``, and ``/openapi.json`` for the event types).

The form is prefilled from the page's query string (``?video=…&from=…&to=…&granularity=…&
event_type=…``), so a view can be linked. The last answers and what was drawn are kept in
``window.tally`` (``counts``, ``top``, ``seq`` counting finished loads, ``error``) for tests.
Values from the answers reach the DOM as text and attribute values only, never as markup: some
come from the lake (batch versions from its publication entries).
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tally</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root{--batch:#3465a4;--speed:#f57900;--na:#babdb6;--hz:#cc0000;--ink:#2e3436;--mute:#6b6f6a}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:var(--ink);background:#fafafa}
header{background:#204a87;color:#fff;padding:.7em 1.5em;display:flex;align-items:baseline;gap:1em}
header h1{margin:0;font-size:1.3em}header span{opacity:.8}
main{padding:1em 1.5em;max-width:1100px}
form{display:flex;flex-wrap:wrap;gap:.5em 1em;align-items:end;margin-bottom:1em}
label{display:flex;flex-direction:column;font-size:.8em;color:var(--mute)}
input,select,button{font:inherit;padding:.25em .4em;border:1px solid #c8c8c8;border-radius:4px;background:#fff}
button{background:#204a87;color:#fff;border-color:#204a87;padding:.3em 1.2em;cursor:pointer}
.card{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:.8em 1em;margin-bottom:1em}
.row{display:flex;gap:1em;flex-wrap:wrap}.row>.card{flex:1;min-width:300px}
.big{font-size:1.6em;font-weight:600}.mute{color:var(--mute);font-size:.85em}
svg text{font-size:11px;fill:var(--mute)}
rect.batch{fill:var(--batch)}rect.speed{fill:var(--speed)}rect.na{fill:url(#hatch)}rect.none{fill:var(--na)}
rect.bar:hover{opacity:.75}
.legend span{display:inline-block;width:.9em;height:.9em;vertical-align:-1px;margin:0 .3em 0 1em;border-radius:2px}
.legend .batch{background:var(--batch)}.legend .speed{background:var(--speed)}.legend .na{background:var(--na)}
.legend .hz{height:0;border-top:2px dashed var(--hz);width:1.2em;border-radius:0}
table{border-collapse:collapse;width:100%}td,th{padding:3px 8px;text-align:right}
th{border-bottom:1px solid #ccc;font-weight:600;color:var(--mute)}td:nth-child(2),th:nth-child(2){text-align:left}
#top tbody tr{cursor:pointer}#top tbody tr:hover{background:#eef3fa}#top tr.sel{background:#dbe6f4}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:0}dt{color:var(--mute)}dd{margin:0}
#err{color:#a40000;min-height:1.2em;margin:.3em 0}.warn{color:#8f5902}
</style></head><body>
<header><h1>Tally</h1><span>exact and fresh event counts — batch views before the horizon, speed views after</span></header>
<main>
<form id="f">
 <label>video<input name="video" list="videos" size="14" required></label>
 <datalist id="videos"></datalist>
 <label>event type<select name="event_type"><option>view</option></select></label>
 <label>from<input name="from" size="24"></label>
 <label>to<input name="to" size="24"></label>
 <label>granularity<select name="granularity"><option>minute</option><option selected>hour</option><option>day</option></select></label>
 <label>X-API-Key<input name="key" size="10" placeholder="if required"></label>
 <button>show</button>
</form>
<div id="err"></div>
<div class="card">
 <div class="row" style="align-items:baseline;justify-content:space-between">
  <div><span class="big" id="total">–</span> <span class="mute" id="what"></span></div>
  <div class="legend mute"><span class="batch"></span>batch view<span class="speed"></span>speed view<span class="na"></span>unavailable or none<span class="hz"></span>batch horizon</div>
 </div>
 <svg id="chart" width="100%" height="270" viewBox="0 0 1000 270" preserveAspectRatio="none" role="img" aria-label="merged counts">
  <defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
   <rect width="6" height="6" fill="#e4e4e4"/><line x1="0" y1="0" x2="0" y2="6" stroke="#babdb6" stroke-width="3"/></pattern></defs>
 </svg>
 <div id="warnings" class="warn mute"></div>
</div>
<div class="row">
 <div class="card"><h3 style="margin:.2em 0 .5em">Top videos <span class="mute" id="topwhat"></span></h3>
  <table id="top"><thead><tr><th>#</th><th>video</th><th>count</th><th>watch time</th></tr></thead><tbody></tbody></table></div>
 <div class="card"><h3 style="margin:.2em 0 .5em">Freshness</h3><dl id="fresh"></dl></div>
</div>
</main>
<script>
"use strict";
const state = window.tally = {seq: 0, counts: null, top: null, error: null, drawn: []};
const f = document.getElementById('f');
const $ = id => document.getElementById(id);
const HOUR = 36e5, W = 1000, H = 270, L = 56, R = 8, T = 10, B = 34;
// Every value from an answer goes into the page as text or an attribute value, through el():
// the page writes no markup built from data (a version string comes from the lake).
const SVG = 'http://www.w3.org/2000/svg';
function el(tag, attrs, ...kids) {  // tag 'svg:rect' for SVG; kids: nodes or text
  const e = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  e.append(...kids.map(k => k instanceof Node ? k : String(k)));
  return e;
}
const lines = v => (Array.isArray(v) ? v : [v]).flatMap((s, i) => i ? [el('br'), String(s)] : [String(s)]);
const fmtInt = n => n == null ? '–' : Number(n).toLocaleString('en-US');
const fmtMs = ms => { const s = ms / 1000; return s < 120 ? s.toFixed(1) + ' s' : s < 7200 ?
  (s / 60).toFixed(1) + ' min' : (s / 3600).toFixed(1) + ' h'; };
const iso = ms => new Date(ms).toISOString().replace('.000Z', 'Z');

async function get(path) {
  const h = f.key.value ? {'X-API-Key': f.key.value} : {};
  const r = await fetch(path, {headers: h});
  const b = await r.json();
  if (!r.ok) throw new Error(b.error || ('HTTP ' + r.status));
  return b;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

function draw(c) {
  const svg = $('chart');
  svg.querySelectorAll('g').forEach(g => g.remove());
  const n = c.buckets.length, pw = W - L - R, ph = H - T - B;
  const max = niceMax(Math.max(0, ...c.buckets.map(b => b.count || 0)));
  const bw = pw / n, gap = bw > 4 ? 1 : 0;
  const g = el('svg:g');
  for (let i = 0; i <= 4; i++) {
    const y = T + ph - ph * i / 4;
    g.append(el('svg:line', {x1: L, x2: W - R, y1: y, y2: y, stroke: '#eee'}),
             el('svg:text', {x: L - 6, y: y + 4, 'text-anchor': 'end'}, fmtInt(max * i / 4)));
  }
  const drawn = [];
  c.buckets.forEach((b, i) => {
    const cls = b.unavailable ? 'na' : b.source;
    const v = b.count || 0, h = b.unavailable ? ph : ph * v / max;
    const x = L + i * bw;
    g.append(el('svg:rect', {class: `bar ${cls}`, x: x.toFixed(2), width: Math.max(0.5, bw - gap).toFixed(2),
                             y: (T + ph - h).toFixed(2), height: h.toFixed(2), 'data-start': b.start,
                             'data-count': b.count == null ? '' : b.count, 'data-source': b.source},
      el('svg:title', {}, `${b.start}: ${b.unavailable ? 'unavailable' : fmtInt(b.count)} (${b.source})`)));
    drawn.push({start: b.start, count: b.count, source: b.source, cls: cls, height: h});
  });
  const t0 = Date.parse(c.from), t1 = Date.parse(c.to);
  const ticks = Math.min(n, 8);
  for (let i = 0; i < ticks; i++) {
    const k = Math.floor(i * n / ticks), ms = Date.parse(c.buckets[k].start);
    const label = c.granularity === 'day' ? iso(ms).slice(5, 10) : iso(ms).slice(5, 16).replace('T', ' ');
    g.append(el('svg:text', {x: L + k * bw, y: H - B + 16}, label));
  }
  g.append(el('svg:line', {x1: L, x2: W - R, y1: T + ph, y2: T + ph, stroke: '#999'}));
  state.horizonX = null;
  if (c.batch_horizon) {
    const hz = Date.parse(c.batch_horizon);
    if (hz > t0 && hz < t1) {
      const x = L + pw * (hz - t0) / (t1 - t0);
      state.horizonX = x;
      g.append(el('svg:line', {id: 'horizon', x1: x, x2: x, y1: T - 4, y2: T + ph, stroke: 'var(--hz)',
                               'stroke-width': 2, 'stroke-dasharray': '6 4'}),
               el('svg:text', {x: x + 4, y: T + 8, style: 'fill:var(--hz)'},
                  'batch horizon ' + String(c.batch_horizon).slice(0, 16).replace('T', ' ')));
    }
  }
  svg.append(g);
  state.drawn = drawn;
  $('total').textContent = fmtInt(c.total);
  $('what').textContent = `${c.event_type} events of ${c.video_id}, ${c.from.slice(0, 16)} to ` +
    `${c.to.slice(0, 16)} by ${c.granularity} · watch time ${fmtMs(c.watch_ms)}` +
    (c.speed_unavailable ? ' · speed views unavailable' : '');
  $('warnings').replaceChildren(...lines(c.warnings || []));
}

function drawTop(t) {
  $('topwhat').textContent = `· ${t.event_type}, ${t.exact ? 'exact (batch views only)' : 'includes speed views'}`;
  const rows = t.items.map((it, i) => {
    const tr = el('tr', {'data-video': it.video_id}, el('td', {}, i + 1), el('td', {}, it.video_id),
                  el('td', {}, fmtInt(it.count)), el('td', {}, fmtMs(it.watch_ms)));
    tr.classList.toggle('sel', it.video_id === f.video.value);
    return tr;
  });
  $('top').tBodies[0].replaceChildren(...rows.length ? rows :
    [el('tr', {}, el('td', {colspan: 4, class: 'mute'}, 'no events in this range'))]);
  $('videos').replaceChildren(...t.items.map(it => el('option', {value: it.video_id})));
}

function drawFresh(c) {
  const fr = c.freshness || {}, now = Date.now();
  const hz = c.batch_horizon ? Date.parse(c.batch_horizon) : null;
  const days = Object.keys(c.batch_versions || {});
  const rows = [
    ['speed max event time', fr.speed_max_event_time || '–'],
    ['speed lag', fr.lag_seconds == null ? '–' : fmtMs(fr.lag_seconds * 1000)],
    ['speed watermark', fr.speed_watermark || '–'],
    ['speed views updated', fr.speed_updated_at || '–'],
    ['dropped as late', fmtInt(fr.dropped_late)],
    ['batch horizon', c.batch_horizon ? `${c.batch_horizon} (${fmtMs(now - hz)} ago)` : 'none'],
    ['pending days', (c.pending_days || []).join(', ') || 'none'],
    ['pinned days', (c.pinned_days || []).join(', ') || 'none'],
    ['batch versions used', days.length ? days.map(d => `${d}: ${c.batch_versions[d] || 'none'}`) : '–'],
  ];
  $('fresh').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, ...lines(v))]));
}

async function show(ev) {
  if (ev) ev.preventDefault();
  $('err').textContent = '';
  state.error = null;
  const q = {event_type: f.event_type.value, from: f.from.value, to: f.to.value};
  try {
    const top = await get('/v1/top?' + new URLSearchParams({...q, k: 10}));
    if (!f.video.value && top.items.length) f.video.value = top.items[0].video_id;
    const c = await get('/v1/videos/' + encodeURIComponent(f.video.value) + '/counts?' +
                        new URLSearchParams({...q, granularity: f.granularity.value}));
    state.top = top; state.counts = c;
    draw(c); drawTop(top); drawFresh(c);
  } catch (e) {
    state.error = e.message; $('err').textContent = e.message;
  }
  state.seq += 1;
}

$('top').tBodies[0].addEventListener('click', e => {
  const tr = e.target.closest('tr[data-video]');
  if (tr) { f.video.value = tr.dataset.video; show(); }
});
f.addEventListener('submit', show);

(async () => {
  const now = Date.now(), params = new URLSearchParams(location.search);
  f.from.value = iso(Math.floor((now - 3 * 24 * HOUR) / HOUR) * HOUR);
  f.to.value = iso(Math.ceil(now / HOUR) * HOUR);
  try {  // the event types this server takes, from its own OpenAPI document
    const doc = await get('/openapi.json');
    const types = doc.paths['/v1/top'].get.parameters.find(p => p.name === 'event_type').schema.enum;
    f.event_type.replaceChildren(...types.map(t => el('option', {}, t)));
  } catch (e) { /* keep "view" */ }
  for (const k of ['video', 'event_type', 'from', 'to', 'granularity'])
    if (params.get(k)) f[k].value = params.get(k);
  show();
})();
</script></body></html>
"""
