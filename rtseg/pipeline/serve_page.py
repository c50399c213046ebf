"""The page ``rtseg run --serve`` serves at ``/``: one self-contained HTML file (no scripts or
fonts from elsewhere: edge boxes are often offline). It shows ``/stream.mjpg`` and polls
``/stats.json`` every 400 ms; every text it shows from the server goes through
``textContent``, never parsed as HTML. A token in the page's query is passed on to both.
With several sources ``/`` is GRID_PAGE instead: a tile per stream (``/stream/N.mjpg`` and
that stream's numbers from ``/stats.json``).
"""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rtseg live</title>
<style>
:root { --bg:#111418; --panel:#1b2027; --line:#2c333d; --text:#e6e9ee; --dim:#8b95a3;
        --fps:#4cc38a; --lat:#f5a524; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--text);
       font:14px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display:flex; gap:14px; align-items:baseline; padding:10px 16px;
         border-bottom:1px solid var(--line); }
header h1 { font-size:17px; margin:0; }
#state { padding:2px 8px; border-radius:10px; background:#333; font-weight:600; }
#state.running { background:#1f6f47; } #state.ended { background:#7a5b12; }
#state.disconnected { background:#8a2331; }
#source { color:var(--dim); overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
main { display:grid; grid-template-columns:minmax(0,1fr) 330px; gap:14px; padding:14px; }
#left { display:flex; flex-direction:column; gap:14px; min-width:0; }
#view { position:relative; background:#000; border:1px solid var(--line); min-height:120px; }
#video { display:block; width:100%; height:auto; max-height:66vh; object-fit:contain; }
#novideo { position:absolute; inset:0; display:flex; align-items:center; justify-content:center;
           color:var(--dim); }
.card { background:var(--panel); border:1px solid var(--line); border-radius:6px;
        padding:10px 12px; }
.card h2 { font-size:12px; text-transform:uppercase; letter-spacing:.06em; color:var(--dim);
           margin:0 0 6px; font-weight:600; }
aside { display:flex; flex-direction:column; gap:12px; }
.big { font-size:34px; font-weight:700; font-variant-numeric:tabular-nums; }
.big small { font-size:15px; color:var(--dim); font-weight:400; }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
td { padding:2px 0; } td.v { text-align:right; white-space:nowrap; }
td.bar { width:42%; padding-left:8px; }
.bar div { height:8px; background:#3d7bd9; border-radius:2px; }
.sw { display:inline-block; width:12px; height:12px; border-radius:2px; margin-right:6px;
      vertical-align:-1px; border:1px solid #0006; }
#chart { width:100%; height:170px; display:block; }
.legend { color:var(--dim); font-size:12px; }
.legend b { font-weight:600; } .fps { color:var(--fps); } .lat { color:var(--lat); }
#ended { color:#f0c674; }
@media (max-width: 900px) { main { grid-template-columns:1fr; } }
</style></head>
<body>
<header><h1>rtseg live</h1><span id="state">connecting</span><span id="source"></span></header>
<main>
 <div id="left">
  <div id="view"><img id="video" alt="live segmentation overlay">
   <div id="novideo">waiting for the first frame…</div></div>
  <div class="card"><h2>FPS and latency, last minute</h2><canvas id="chart"></canvas>
   <div class="legend"><b class="fps">━ FPS</b> (left axis) &nbsp;
    <b class="lat">━ latency ms</b> (capture → written, right axis)</div></div>
 </div>
 <aside>
  <div class="card"><div class="big"><span id="fps">–</span> <small>FPS</small></div>
   <div id="ended"></div>
   <table>
    <tr><td>frames</td><td class="v" id="frames">–</td></tr>
    <tr><td>dropped</td><td class="v" id="dropped">–</td></tr>
    <tr><td>mean FPS</td><td class="v" id="meanfps">–</td></tr>
    <tr><td>seconds</td><td class="v" id="seconds">–</td></tr>
    <tr><td>latency now / p50 / p99 ms</td><td class="v" id="latency">–</td></tr>
    <tr><td>mIoU</td><td class="v" id="miou">–</td></tr>
    <tr><td>TC (flicker: 1 = none)</td><td class="v" id="tc">–</td></tr>
    <tr><td>backend</td><td class="v" id="backend">–</td></tr>
    <tr><td>viewers</td><td class="v" id="viewers">–</td></tr>
   </table></div>
  <div class="card"><h2>Stage ms per frame</h2><table id="stages"></table></div>
  <div class="card"><h2>Queue depth / bound</h2><table id="queues"></table></div>
  <div class="card"><h2>Classes <span id="ioutitle"></span></h2><table id="classes"></table></div>
 </aside>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const withToken = (path) => token ? path + "?token=" + encodeURIComponent(token) : path;
const $ = (id) => document.getElementById(id);
const fmt = (v, d = 1) => (v === null || v === undefined) ? "–" : Number(v).toFixed(d);
let online = true, retry = null, lastClasses = "";

const video = $("video");
function startVideo() {
  retry = null;
  video.src = withToken("stream.mjpg") + (token ? "&" : "?") + "t=" + Date.now();
}
video.addEventListener("load", () => { $("novideo").style.display = "none"; });
video.addEventListener("error", () => {
  $("novideo").style.display = "flex";
  $("novideo").textContent = "video unavailable (too many viewers?), retrying…";
  if (online && !retry) retry = setTimeout(startVideo, 3000);
});

function row(table, cells) {
  const tr = document.createElement("tr");
  for (const [text, cls, bar] of cells) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (bar !== undefined) {
      const d = document.createElement("div");
      d.style.width = Math.max(0, Math.min(100, bar)) + "%";
      td.appendChild(d);
    } else if (text instanceof Node) td.appendChild(text);
    else td.textContent = text;
    tr.appendChild(td);
  }
  table.appendChild(tr);
}

function render(s) {
  const st = $("state");
  st.textContent = s.state; st.className = s.state;
  $("source").textContent = s.source ? s.source + (s.engine ? "  ·  " + s.engine : "") : "";
  const ended = s.state === "ended";
  $("fps").textContent = fmt(ended ? s.fps : s.fps_now);
  $("ended").textContent = ended ? "run ended (" + (s.ended_by || "done") +
      "): last frame and final numbers" : "";
  $("frames").textContent = s.frames ?? "–";
  $("dropped").textContent = s.dropped ?? "–";
  $("meanfps").textContent = fmt(s.fps, 2);
  $("seconds").textContent = fmt(s.seconds);
  const lat = s.latency_ms || {};
  $("latency").textContent = fmt(s.latency_ms_now) + " / " + fmt(lat.p50) + " / " + fmt(lat.p99);
  $("miou").textContent = (s.miou === null || s.miou === undefined) ? "– (no --labels)"
      : fmt(s.miou, 4) + " (" + s.scored_frames + " frames)";
  $("tc").textContent = (s.tc_pairs === undefined) ? "– (no --consistency)"
      : fmt(s.tc, 4) + " (" + s.tc_pairs + " pairs, " + s.tc_skipped + " skipped)";
  $("backend").textContent = s.backend
      ? s.backend + " · " + s.device + " · batch " + s.batch : "–";
  $("viewers").textContent = s.viewers + " / " + s.max_viewers;

  const stages = $("stages"); stages.replaceChildren();
  const ms = s.stage_ms || {};
  const top = Math.max(1e-9, ...Object.values(ms).filter((v) => v !== null));
  for (const [name, v] of Object.entries(ms))
    row(stages, [[name], [fmt(v), "v"], [null, "bar", v === null ? 0 : 100 * v / top]]);

  const queues = $("queues"); queues.replaceChildren();
  for (const [name, depth] of Object.entries(s.queues || {}))
    row(queues, [[name], [depth + " / " + ((s.queue_bounds || {})[name] ?? "?"), "v"]]);

  const iou = s.per_class_iou || null;
  $("ioutitle").textContent = iou ? "· IoU" : "";
  const key = JSON.stringify([s.classes, iou]);
  if (key !== lastClasses) {
    lastClasses = key;
    const classes = $("classes"); classes.replaceChildren();
    for (const c of s.classes || []) {
      const name = document.createElement("span");
      const sw = document.createElement("span");
      sw.className = "sw"; sw.style.background = c.color;
      name.append(sw, c.name);
      row(classes, [[name], [iou ? fmt(iou[c.name], 3) : "", "v"]]);
    }
  }
  drawChart(s.history || {t: [], fps: [], latency_ms: []});
}

function drawChart(h) {
  const canvas = $("chart"), dpr = window.devicePixelRatio || 1;
  const W = canvas.clientWidth, H = canvas.clientHeight;
  canvas.width = W * dpr; canvas.height = H * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr); g.clearRect(0, 0, W, H);
  const L = 34, R = 40, T = 8, B = 18, w = W - L - R, hh = H - T - B;
  const tEnd = h.t.length ? h.t[h.t.length - 1] : 60, tStart = tEnd - 60;
  const nice = (v) => {  // four grid steps of 1, 2, 2.5 or 5 × a power of ten
    const raw = Math.max(v, 1e-3) * 1.1 / 4, p = 10 ** Math.floor(Math.log10(raw));
    return 4 * p * [1, 2, 2.5, 5, 10].find((k) => k * p >= raw);
  };
  const fMax = nice(Math.max(0, ...h.fps.filter((v) => v !== null)));
  const lMax = nice(Math.max(0, ...h.latency_ms.filter((v) => v !== null)));
  const digits = (max) => max / 4 < 1 ? 2 : (max / 4) % 1 ? 1 : 0;
  g.strokeStyle = "#2c333d"; g.fillStyle = "#8b95a3"; g.font = "11px system-ui"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = T + hh * i / 4;
    g.beginPath(); g.moveTo(L, y); g.lineTo(L + w, y); g.stroke();
    g.textAlign = "right"; g.fillText(fmt(fMax * (4 - i) / 4, digits(fMax)), L - 4, y + 4);
    g.textAlign = "left"; g.fillText(fmt(lMax * (4 - i) / 4, digits(lMax)), L + w + 4, y + 4);
  }
  g.textAlign = "center";
  for (let s = 0; s <= 60; s += 15) g.fillText((s - 60) + " s", L + w * s / 60, H - 4);
  const line = (vals, max, colour) => {
    g.strokeStyle = colour; g.lineWidth = 2; g.beginPath(); let pen = false;
    h.t.forEach((t, i) => {
      const v = vals[i];
      if (v === null || t < tStart) { pen = false; return; }
      const x = L + w * (t - tStart) / 60, y = T + hh * (1 - v / max);
      pen ? g.lineTo(x, y) : g.moveTo(x, y); pen = true;
    });
    g.stroke();
  };
  line(h.latency_ms, lMax, "#f5a524");
  line(h.fps, fMax, "#4cc38a");
}

async function poll() {
  try {
    const r = await fetch(withToken("stats.json"), {cache: "no-store"});
    if (!r.ok) throw new Error(r.status);
    render(await r.json());
    if (!online) { online = true; startVideo(); }
  } catch (e) {
    online = false;
    $("state").textContent = "disconnected"; $("state").className = "disconnected";
  }
  setTimeout(poll, 400);
}
startVideo();
poll();
</script>
</body></html>
""".encode()

# ``/`` of a run over several sources: one tile per stream (its MJPEG route and its numbers),
# the run's totals above. The same rules as PAGE: self-contained, server text as textContent.
GRID_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rtseg live: streams</title>
<style>
body { margin:0; background:#111418; color:#e6e9ee;
       font:14px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display:flex; gap:14px; align-items:baseline; padding:10px 16px;
         border-bottom:1px solid #2c333d; flex-wrap:wrap; }
header h1 { font-size:17px; margin:0; }
#state { padding:2px 8px; border-radius:10px; background:#333; font-weight:600; }
#state.running { background:#1f6f47; } #state.ended { background:#7a5b12; }
#state.disconnected { background:#8a2331; }
#total { color:#8b95a3; font-variant-numeric:tabular-nums; }
#grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(360px, 1fr)); gap:12px;
        padding:12px; }
.tile { background:#1b2027; border:1px solid #2c333d; border-radius:6px; overflow:hidden; }
.tile img { display:block; width:100%; height:auto; background:#000; min-height:80px; }
.tile .cap { padding:6px 10px; display:flex; justify-content:space-between; gap:8px; }
.tile .name { font-weight:600; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
.tile .nums { color:#8b95a3; font-variant-numeric:tabular-nums; white-space:nowrap; }
.tile .err { color:#f0a0a8; padding:0 10px 6px; }
</style></head>
<body>
<header><h1>rtseg live</h1><span id="state">connecting</span><span id="total"></span></header>
<div id="grid"></div>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const withToken = (path) => token ? path + "?token=" + encodeURIComponent(token) : path;
const $ = (id) => document.getElementById(id);
const fmt = (v, d = 1) => (v === null || v === undefined) ? "–" : Number(v).toFixed(d);
const tiles = [];

function tile(i) {
  if (tiles[i]) return tiles[i];
  const t = document.createElement("div"); t.className = "tile";
  const img = document.createElement("img"); img.alt = "stream " + i;
  const start = () => { img.src = withToken("stream/" + i + ".mjpg") + (token ? "&" : "?") +
                                   "t=" + Date.now(); };
  img.addEventListener("error", () => setTimeout(start, 3000));
  const cap = document.createElement("div"); cap.className = "cap";
  const name = document.createElement("span"); name.className = "name";
  const nums = document.createElement("span"); nums.className = "nums";
  const err = document.createElement("div"); err.className = "err";
  cap.append(name, nums); t.append(img, cap, err); $("grid").appendChild(t);
  start();
  return tiles[i] = {name, nums, err};
}

function render(s) {
  $("state").textContent = s.state; $("state").className = s.state;
  const ms = s.stage_ms || {};
  $("total").textContent = (s.streams || []).length + " streams · " +
      fmt(s.state === "ended" ? s.fps : s.fps_now) + " FPS in all · " + (s.frames ?? "–") +
      " frames · infer " + fmt(ms.infer) + " ms/frame · " + (s.backend || "") + " · batch " +
      (s.batch ?? "–") + (s.engine ? " · " + s.engine : "");
  (s.streams || []).forEach((st, i) => {
    const t = tile(i);
    t.name.textContent = st.name + " · " + (st.source || "");
    const lat = st.latency_ms || {};
    t.nums.textContent = fmt(s.state === "ended" ? st.fps : st.fps_now) + " FPS · " +
        st.frames + " frames · drop " + st.dropped + " · p50 " + fmt(lat.p50, 0) + " ms" +
        (st.miou === null || st.miou === undefined ? "" : " · mIoU " + fmt(st.miou, 3));
    t.err.textContent = st.error ? "failed: " + st.error
        : (st.ended_by && st.ended_by !== "running" ? "ended: " + st.ended_by : "");
  });
}

async function poll() {
  try {
    const r = await fetch(withToken("stats.json"), {cache: "no-store"});
    if (!r.ok) throw new Error(r.status);
    render(await r.json());
  } catch (e) {
    $("state").textContent = "disconnected"; $("state").className = "disconnected";
  }
  setTimeout(poll, 500);
}
poll();
</script>
</body></html>
""".encode()
