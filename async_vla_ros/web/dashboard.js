// Live dashboard: polls /api/state and updates Chart.js charts (vendored chart.umd.min.js).
"use strict";
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const common = {animation: false, responsive: true, maintainAspectRatio: false, parsing: false, normalized: true,
  plugins: {legend: {labels: {boxWidth: 10, font: {size: 10}}}},
  scales: {x: {type: "linear", title: {display: true, text: "s (0 = newest)"}}}};
function opts(extra) { return Object.assign({}, structuredClone(common), extra || {}); }
function line(label, color, extra) {
  return Object.assign({label, data: [], borderColor: color, backgroundColor: color, borderWidth: 1.2,
    pointRadius: 0, spanGaps: false}, extra || {});
}
function xy(xs, ys) { const out = []; for (let i = 0; i < xs.length; i++) if (ys[i] !== null) out.push({x: xs[i], y: ys[i]}); return out; }

// region shading for the chunk overlay (frozen / soft / free), a Chart.js plugin
const regionPlugin = {id: "regions", beforeDatasetsDraw(chart) {
  const r = chart.$regions; if (!r) return;
  const {ctx, chartArea: a, scales: {x}} = chart;
  const fills = {frozen: "rgba(31,119,180,0.16)", soft: "rgba(255,127,14,0.14)", free: "rgba(44,160,44,0.10)"};
  ctx.save();
  for (const [name, [lo, hi]] of Object.entries(r)) {
    if (hi <= lo) continue;
    const x0 = Math.max(a.left, x.getPixelForValue(lo)), x1 = Math.min(a.right, x.getPixelForValue(hi));
    ctx.fillStyle = fills[name]; ctx.fillRect(x0, a.top, x1 - x0, a.bottom - a.top);
    ctx.fillStyle = "#444"; ctx.font = "10px sans-serif"; ctx.fillText(name, x0 + 3, a.top + 11);
  }
  ctx.restore();
}};

const charts = {
  latency: new Chart(document.getElementById("c_latency"), {type: "line", data: {datasets: [
    line("total", COLORS[0], {pointRadius: 2}), line("inference", COLORS[1]), line("transport", COLORS[2]), line("queue", COLORS[3]), line("network", COLORS[4])]},
    options: opts()}),
  hist: new Chart(document.getElementById("c_hist"), {type: "bar", data: {labels: [], datasets: [
    {label: "chunks", data: [], backgroundColor: COLORS[0]}]},
    options: {animation: false, responsive: true, maintainAspectRatio: false, plugins: {legend: {display: false}},
      scales: {x: {title: {display: true, text: "ms (bin start)"}}}}}),
  delay: new Chart(document.getElementById("c_delay"), {type: "line", data: {datasets: [
    line("predicted d", COLORS[1], {stepped: true}), line("measured d", COLORS[0], {showLine: false, pointRadius: 3})]},
    options: opts()}),
  overlay: new Chart(document.getElementById("c_overlay"), {type: "line", data: {datasets: [
    line("previous plan", "#777", {pointRadius: 3, borderDash: [4, 3]}), line("new chunk", COLORS[1], {pointRadius: 3})]},
    options: opts({scales: {x: {type: "linear", title: {display: true, text: "s since the new chunk's observation"}}}}),
    plugins: [regionPlugin]}),
  traj: new Chart(document.getElementById("c_traj"), {type: "line", data: {datasets:
    [0, 1, 2, 3, 4, 5, 6].map(j => line("j" + (j + 1), COLORS[j]))}, options: opts()}),
  jitter: new Chart(document.getElementById("c_jitter"), {type: "line", data: {datasets: [
    line("period error", COLORS[4], {pointRadius: 1})]}, options: opts()}),
  accjerk: new Chart(document.getElementById("c_accjerk"), {type: "line", data: {datasets: [
    line("|accel|", COLORS[1], {yAxisID: "y"}), line("|jerk|", COLORS[3], {yAxisID: "y1"})]},
    options: opts({scales: {x: {type: "linear", title: {display: true, text: "s (0 = newest)"}},
      y: {position: "left", title: {display: true, text: "rad/s²"}},
      y1: {position: "right", grid: {drawOnChartArea: false}, title: {display: true, text: "rad/s³"}}}})}),
};

function counterRows(s) {
  const rows = [["chunk reports", s.counts.reports], ["commands", s.counts.commands], ["chunk switches drawn", s.counts.switches]];
  for (const [k, v] of Object.entries(s.rejects)) rows.push(["rejected chunks: " + k, v]);
  for (const [k, v] of Object.entries(s.diag_counters)) rows.push([k, v]);
  return rows.map(([k, v]) => `<tr><td>${k.replace(/</g, "&lt;")}</td><td class="n">${v}</td></tr>`).join("");
}

const LEVELS = ["OK", "WARN", "ERROR", "STALE"];
function esc(t) { return String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;"); }
function healthRows(s) {
  return Object.entries(s.health || {}).map(([n, h]) =>
    `<tr><td>${esc(n)}</td><td class="lv${h.level}">${LEVELS[h.level] || h.level}</td><td>${esc(h.message)}</td></tr>`).join("");
}

function update(s) {
  const L = s.latency;
  charts.latency.data.datasets[0].data = xy(L.t, L.total_ms);
  charts.latency.data.datasets[1].data = xy(L.t, L.inference_ms);
  charts.latency.data.datasets[2].data = xy(L.t, L.transport_ms);
  charts.latency.data.datasets[3].data = xy(L.t, L.queue_ms);
  charts.latency.data.datasets[4].data = xy(L.t, L.network_ms);
  const H = s.latency_hist;
  charts.hist.data.labels = H.edges_ms.slice(0, -1).map(e => e.toFixed(1));
  charts.hist.data.datasets[0].data = H.counts;
  charts.delay.data.datasets[0].data = xy(s.delay.t, s.delay.predicted);
  charts.delay.data.datasets[1].data = xy(s.delay.t, s.delay.measured);
  const o = s.overlay;
  if (o) {
    charts.overlay.data.datasets[0].data = o.prev.map(([x, y]) => ({x, y}));
    charts.overlay.data.datasets[1].data = o.new.map(([x, y]) => ({x, y}));
    charts.overlay.$regions = o.regions;
    document.getElementById("overlay_title").textContent =
      `Chunk switch to chunk ${o.chunk_id} (joint ${o.joint + 1}): frozen ${o.n_frozen}, soft ${o.n_soft}, free ${o.n_free}`;
  }
  const c = s.command;
  if (c) {
    charts.traj.data.datasets.forEach((d, j) => { d.data = j < c.q.length ? xy(c.t, c.q[j]) : []; });
    charts.jitter.data.datasets[0].data = xy(c.t_period, c.period_err_ms);
    document.getElementById("jitter_title").textContent = "Command period error (ms): " + c.period_source;
    charts.accjerk.data.datasets[0].data = xy(c.t_acc, c.acc);
    charts.accjerk.data.datasets[1].data = xy(c.t_jerk, c.jerk);
  }
  for (const ch of Object.values(charts)) ch.update("none");
  document.getElementById("t_counters").innerHTML = counterRows(s);
  document.getElementById("t_health").innerHTML = healthRows(s);
  const pts = {};
  for (const [k, ch] of Object.entries(charts)) pts[k] = ch.data.datasets.reduce((n, d) => n + d.data.length, 0);
  const st = document.getElementById("status");
  st.dataset.points = JSON.stringify(pts);
  st.dataset.ready = "1";
  const h = s.latency_hist;
  st.textContent = `${s.counts.reports} chunk reports, ${s.counts.commands} commands` +
    (h.p50_ms !== undefined ? ` | total latency p50 ${h.p50_ms.toFixed(1)} ms, p95 ${h.p95_ms.toFixed(1)} ms, max ${h.max_ms.toFixed(1)} ms` : "") +
    (c ? ` | command period ${c.nominal_ms.toFixed(2)} ms, |error| p99 ${c.jitter_p99_ms.toFixed(2)} ms` : "");
}

let period = 500;
async function poll() {
  try {
    const r = await fetch("api/state", {cache: "no-store"});
    const s = await r.json();
    period = (s.config && s.config.poll_ms) || period;
    update(s);
  } catch (e) {
    document.getElementById("status").textContent = "no connection to the dashboard node: " + e;
  }
  setTimeout(poll, period);
}
poll();
