// The operator page: polls /api/state about once a second and draws it. No libraries, no
// network beyond this device (plants' edge networks have no internet). Text from the device
// (part ids, messages) is set with textContent, never parsed as HTML.
"use strict";

const POLL_MS = 1000;
const W = 800, H = 220, LEFT = 40, RIGHT = 790, TOP = 10, BOTTOM = 200;
const bins = new Map();          // bin start (epoch s) -> {t, max, mean, n, over}
let lastT = null, lastRejects = -1, galleryKey = "", token = "";

const $ = (id) => document.getElementById(id);
const fmt = (x, digits = 4) => (x === null || x === undefined) ? "–" : Number(x).toPrecision(digits);
const set = (id, text) => { const e = $(id); if (e.textContent !== String(text)) e.textContent = text; };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c === null || c === undefined ? "" : c);
  return e;
}

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function duration(s) {
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

async function poll() {
  try {
    // ask again for the newest bin too: it keeps filling until its second is over
    const since = lastT === null ? "" : `?since=${lastT - 1e-3}`;
    const r = await fetch(`/api/state${since}`, {cache: "no-store"});
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    render(await r.json());
    $("connection").className = "pill ok";
    set("connection", "live");
  } catch (e) {
    $("connection").className = "pill stale";
    set("connection", `no answer from the device (${e.message})`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function render(s) {
  const id = s.identity || {};
  set("device-identity", `${id.site}/${id.line}/${id.machine} · ${id.device_id}`);
  set("updated", new Date(s.now * 1000).toLocaleTimeString());
  set("uptime", duration(s.uptime_s));
  const card = s.card || {};
  set("model-name", card.name || "–");
  set("model-version", card.version || "–");
  set("model-kind", card.kind || "–");
  set("model-backend", card.backend || "–");
  set("model-bundle", card.bundle || "–");
  set("threshold-rule", card.threshold_rule || "–");
  set("parity", card.parity || "–");
  set("signer", card.signer || "–");
  set("threshold", fmt(s.threshold));
  set("last-score", fmt(s.last_score));
  set("windows-scored", s.windows_scored);
  const inspection = s.kind === "inspection";
  set("scored-label", inspection ? "Parts scored" : "Windows scored");

  const state = $("state");
  if (inspection) {
    const last = s.recent_decisions[0];
    state.className = "state " + (last ? (last.verdict === "reject" ? "anomaly" : "normal") : "unknown");
    set("state", last ? `last part ${last.verdict.toUpperCase()}` : "waiting for parts");
  } else if (s.windows_scored === 0) {
    state.className = "state unknown";
    set("state", "waiting for data");
  } else {
    state.className = "state " + (s.anomaly_active ? "anomaly" : "normal");
    set("state", s.anomaly_active ? "ANOMALY" : "running normally");
  }
  set("severity", s.severity || (s.anomaly_active ? "?" : "none"));

  const h = s.health || {};
  set("health-outbox", h.outbox_depth ?? "–");
  set("health-reconnects", h.mqtt_reconnects ?? "–");
  set("health-dropped", h.dropped_frames ?? "–");
  set("health-refused", h.commands_refused ?? "–");
  set("health-temp", h.cpu_temp_c == null ? "–" : `${h.cpu_temp_c.toFixed(1)} °C`);

  for (const b of s.timeline) { bins.set(b.t, b); if (lastT === null || b.t > lastT) lastT = b.t; }
  drawTimeline(s.now, s.threshold, s.bin_s);
  renderEvents(s);
  $("events-card").hidden = inspection && s.events_total === 0;
  $("inspection-card").hidden = !inspection;
  if (inspection) renderInspection(s);
}

function drawTimeline(now, threshold, binS) {
  const span = Number($("timeline-span").value);
  const start = now - span;
  for (const t of bins.keys()) if (t < now - 600 - 2 * binS) bins.delete(t);
  const shown = [...bins.values()].filter((b) => b.t >= start).sort((a, b) => a.t - b.t);
  let hi = threshold ?? 0, lo = Math.min(0, threshold ?? 0);
  for (const b of shown) { hi = Math.max(hi, b.max); lo = Math.min(lo, b.max); }
  hi = hi > lo ? hi + (hi - lo) * 0.1 : lo + 1;
  const x = (t) => LEFT + (RIGHT - LEFT) * (t + binS / 2 - start) / span;
  const y = (v) => BOTTOM - (BOTTOM - TOP) * (v - lo) / (hi - lo);
  $("timeline-score").setAttribute("points", shown.map((b) => `${x(b.t).toFixed(1)},${y(b.max).toFixed(1)}`).join(" "));
  const over = $("timeline-over");
  over.replaceChildren(...shown.filter((b) => b.over > 0).map((b) => svg("circle", {cx: x(b.t), cy: y(b.max), r: 2.5})));
  const thr = $("timeline-threshold");
  const ty = threshold == null ? -10 : y(threshold);
  thr.setAttribute("y1", ty); thr.setAttribute("y2", ty);
  const grid = [], labels = [];
  for (let k = 0; k <= 4; k++) {
    const v = lo + (hi - lo) * k / 4;
    grid.push(svg("line", {x1: LEFT, x2: RIGHT, y1: y(v), y2: y(v)}));
    labels.push(svg("text", {x: 2, y: y(v) + 4}, fmt(v, 3)));
  }
  labels.push(svg("text", {x: LEFT, y: H - 4}, `−${duration(span)}`));
  labels.push(svg("text", {x: RIGHT - 24, y: H - 4}, "now"));
  $("timeline-grid").replaceChildren(...grid);
  $("timeline-labels").replaceChildren(...labels);
  const svgEl = $("timeline");
  svgEl.dataset.points = shown.length;
  svgEl.dataset.latest = shown.length ? shown[shown.length - 1].t : 0;
  svgEl.dataset.threshold = threshold ?? "";
}

function renderEvents(s) {
  set("events-total", s.events_total);
  const rows = s.recent_events.slice(0, 15).map((e) => el("tr", {class: e.state === "cleared" ? "" : "reject"},
    el("td", {}, (e.time_utc || "").replace("T", " ").slice(0, 19)), el("td", {}, e.state),
    el("td", {}, e.severity), el("td", {}, fmt(e.score)), el("td", {}, fmt(e.threshold))));
  $("events").replaceChildren(...rows);
}

function renderInspection(s) {
  set("count-pass", s.verdicts.pass || 0);
  set("count-reject", s.verdicts.reject || 0);
  set("reject-rate", s.reject_rate == null ? "–" : `${(100 * s.reject_rate).toFixed(1)} %`);
  const rows = s.recent_decisions.slice(0, 12).map((d) => el("tr", {class: d.verdict, "data-part-id": d.part_id},
    el("td", {}, d.part_id), el("td", {}, d.verdict), el("td", {}, d.reason), el("td", {}, fmt(d.score)),
    el("td", {}, `${d.latency_ms.toFixed(1)} ms`), el("td", {}, (d.time_utc || "").slice(11, 23))));
  $("decisions").replaceChildren(...rows);
  const rejects = s.verdicts.reject || 0;
  if (rejects !== lastRejects) { lastRejects = rejects; loadRejects(); }
}

async function loadRejects() {
  try {
    const r = await fetch("/api/rejects?limit=12", {cache: "no-store"});
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const data = await r.json();
    if (!data.archive) { set("gallery-note", "(no reject archive configured)"); return; }
    // the archive writes on its own thread: look again shortly if it has not caught up yet
    if (data.rejects.length < Math.min(lastRejects, 12)) setTimeout(() => { lastRejects = -1; }, 1000);
    const key = data.rejects.map((x) => x.frame).join("|");
    if (key === galleryKey) return;
    galleryKey = key;
    $("gallery").replaceChildren(...data.rejects.map((x) => el("figure", {class: "reject", "data-part-id": x.part_id},
      el("div", {class: "pics"}, el("img", {src: x.frame, alt: `frame of ${x.part_id}`}),
        x.heatmap ? el("img", {src: x.heatmap, alt: `heatmap of ${x.part_id}`}) : null),
      el("figcaption", {}, el("strong", {}, x.part_id),
        x.score == null ? ` · ${x.reason}` : ` · score ${fmt(x.score)} (threshold ${fmt(x.threshold)})`,
        x.reason === "score" ? "" : ` · reason: ${x.reason}`, el("br"),
        (x.time_utc || "").replace("T", " ").slice(0, 19)))));
  } catch (e) {
    set("gallery-note", `(could not load: ${e.message})`);
  }
}

function setupForm() {
  const form = $("threshold-form"), button = $("threshold-submit"), out = $("threshold-result");
  const update = () => { token = $("token").value.trim(); button.disabled = !token || $("new-threshold").value === ""; };
  $("token").addEventListener("input", update);
  $("new-threshold").addEventListener("input", update);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    try {
      const r = await fetch("/api/threshold", {
        method: "POST", headers: {"Content-Type": "application/json", "Authorization": `Bearer ${token}`},
        body: JSON.stringify({threshold: Number($("new-threshold").value)}),
      });
      const body = await r.json();
      out.className = "note " + (r.ok ? "ok" : "error");
      out.textContent = r.ok ? body.message : (body.error || body.message || `HTTP ${r.status}`);
    } catch (e) {
      out.className = "note error";
      out.textContent = `no answer from the device (${e.message})`;
    } finally {
      update();
    }
  });
}

$("timeline-span").addEventListener("change", () => { lastT = null; });
setupForm();
poll();
