"""``GET /``: a small dashboard page — a video's merged counts over time (batch and speed parts
told apart by colour), the top list, freshness. Static HTML; it calls the JSON API itself."""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Tally</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
input,select,button{font:inherit;margin-right:.4em}
.bars{display:flex;align-items:flex-end;height:180px;gap:1px;border-bottom:1px solid #999;margin:1em 0}
.bar{flex:1;min-width:1px}.batch{background:#3465a4}.speed{background:#f57900}.na{background:#ccc}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right}th{border-bottom:1px solid #999}
.legend span{display:inline-block;width:1em;height:1em;vertical-align:middle;margin:0 .3em 0 1em}
#err{color:#a40000}
</style></head><body>
<h1>Tally</h1>
<form id="f">
 video <input name="video" value="v0001" size="10">
 type <input name="event_type" value="view" size="7">
 from <input name="from" size="22"> to <input name="to" size="22">
 <select name="granularity"><option>minute</option><option selected>hour</option><option>day</option></select>
 key <input name="key" size="10" placeholder="X-API-Key">
 <button>show</button>
</form>
<p id="err"></p>
<p class="legend"><span class="batch"></span>batch view<span class="speed"></span>speed view
<span class="na"></span>unavailable</p>
<div id="meta"></div><div class="bars" id="bars"></div>
<h2>Top</h2><table id="top"></table>
<script>
const f = document.getElementById('f');
const now = new Date(); const day = 864e5;
f.from.value = new Date(now - 3 * day).toISOString().slice(0, 13) + ':00:00Z';
f.to.value = now.toISOString().slice(0, 13) + ':00:00Z';
async function get(url) {
  const h = f.key.value ? {'X-API-Key': f.key.value} : {};
  const r = await fetch(url, {headers: h}); const b = await r.json();
  if (!r.ok) throw new Error(b.error || r.status); return b;
}
function esc(s) { return String(s).replace(/[&<>"]/g, c => '&#' + c.charCodeAt(0) + ';'); }
async function show(ev) {
  if (ev) ev.preventDefault();
  document.getElementById('err').textContent = '';
  const q = new URLSearchParams({event_type: f.event_type.value, from: f.from.value,
                                 to: f.to.value, granularity: f.granularity.value});
  try {
    const c = await get('/v1/videos/' + encodeURIComponent(f.video.value) + '/counts?' + q);
    const max = Math.max(1, ...c.buckets.map(b => b.count || 0));
    document.getElementById('bars').innerHTML = c.buckets.map(b =>
      '<div class="bar ' + (b.unavailable ? 'na' : b.source) + '" title="' + esc(b.start) + ': ' +
      esc(b.count) + ' (' + b.source + ')" style="height:' +
      (b.unavailable ? 100 : 100 * (b.count || 0) / max) + '%"></div>').join('');
    const fr = c.freshness;
    document.getElementById('meta').innerHTML = 'total <b>' + esc(c.total) + '</b>; batch horizon ' +
      esc(c.batch_horizon) + '; speed max event time ' + esc(fr.speed_max_event_time) +
      ' (lag ' + esc(fr.lag_seconds) + ' s)' + (c.speed_unavailable ? ' — <b>speed views unavailable</b>' : '') +
      (c.warnings || []).map(w => '<br>' + esc(w)).join('');
    const t = await get('/v1/top?' + new URLSearchParams({event_type: f.event_type.value,
                                                         from: f.from.value, to: f.to.value, k: 10}));
    document.getElementById('top').innerHTML = '<tr><th>video</th><th>count</th><th>watch_ms</th></tr>' +
      t.items.map(i => '<tr><td>' + esc(i.video_id) + '</td><td>' + i.count + '</td><td>' + i.watch_ms +
                       '</td></tr>').join('') + '<tr><td colspan=3>' + (t.exact ? 'exact (batch)' :
                       'includes speed views') + '</td></tr>';
  } catch (e) { document.getElementById('err').textContent = e.message; }
}
f.addEventListener('submit', show);
</script></body></html>
"""
