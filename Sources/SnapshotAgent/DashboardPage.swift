/// The dashboard's one page: HTML, CSS and script in one string, served by the binary (no
/// build step, nothing from a CDN). It opens `/events` and redraws on every message; ages
/// tick once a second on their own.
enum DashboardPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>snapshot · fleet</title>
<style>
  :root { --bg:#0f1419; --card:#171e26; --line:#263241; --text:#d8dee6; --dim:#8a97a8; --ok:#3fb950; --warn:#d29922; --crit:#f85149; --busy:#58a6ff; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--text); }
  header { display:flex; align-items:baseline; gap:24px; padding:14px 24px; border-bottom:1px solid var(--line); position:sticky; top:0; background:var(--bg); z-index:1; }
  header h1 { font-size:17px; margin:0; font-weight:600; letter-spacing:.2px; }
  header .sum { display:flex; gap:16px; color:var(--dim); }
  header .sum b { color:var(--text); font-weight:600; }
  header .conn { margin-left:auto; color:var(--dim); font-size:12px; }
  header .conn.down { color:var(--crit); }
  main { display:grid; grid-template-columns:repeat(auto-fill, minmax(340px, 1fr)); gap:16px; padding:20px 24px; }
  .card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px; display:flex; flex-direction:column; gap:10px; }
  .card.offline { opacity:.6; border-color:#4a2226; }
  .top { display:flex; align-items:center; gap:10px; }
  .dot { width:10px; height:10px; border-radius:50%; background:var(--dim); flex:none; }
  .online .dot { background:var(--ok); box-shadow:0 0 6px var(--ok); }
  .offline .dot { background:var(--crit); }
  .name { font-weight:600; font-size:15px; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
  .badge { margin-left:auto; font-size:12px; padding:2px 8px; border-radius:20px; background:#222c38; color:var(--dim); white-space:nowrap; }
  .badge.busy { background:#13304f; color:var(--busy); }
  .badge.offline { background:#3a1d20; color:var(--crit); }
  .bar { height:8px; background:#222c38; border-radius:4px; overflow:hidden; }
  .bar > div { height:100%; background:linear-gradient(90deg, #1f6feb, var(--busy)); width:0; transition:width .4s ease; }
  .job { font-size:12px; color:var(--dim); display:flex; justify-content:space-between; gap:8px; }
  table { width:100%; border-collapse:collapse; font-size:13px; }
  td { padding:2px 0; }
  td.age { text-align:right; font-variant-numeric:tabular-nums; }
  td.age.stale { color:var(--warn); }
  td.failed { color:var(--crit); }
  .alerts { display:flex; flex-wrap:wrap; gap:6px; }
  .chip { font-size:12px; padding:1px 8px; border-radius:20px; border:1px solid var(--line); color:var(--dim); }
  .chip.ok { border-color:#1f4d2b; color:#6fbf7f; }
  .chip.warning { border-color:var(--warn); color:var(--warn); }
  .chip.critical { border-color:var(--crit); color:var(--crit); }
  .actions { display:flex; gap:8px; align-items:center; }
  select, button { font:inherit; font-size:12px; background:#222c38; color:var(--text); border:1px solid var(--line); border-radius:6px; padding:4px 10px; }
  button { cursor:pointer; }
  button:hover { border-color:var(--busy); }
  button:disabled { opacity:.5; cursor:default; }
  .empty { padding:60px 24px; color:var(--dim); text-align:center; grid-column:1/-1; }
  #toast { position:fixed; bottom:18px; right:24px; background:#222c38; border:1px solid var(--line); padding:8px 14px; border-radius:8px; opacity:0; transition:opacity .3s; }
  #toast.show { opacity:1; }
</style>
</head>
<body>
<header>
  <h1>snapshot · fleet</h1>
  <div class="sum"><span><b id="n-online">0</b> online</span><span><b id="n-offline">0</b> offline</span><span><b id="n-busy">0</b> busy</span><span><b id="n-alerts">0</b> alerting</span></div>
  <div class="conn" id="conn">connecting…</div>
</header>
<main id="agents"><div class="empty">waiting for agents…</div></main>
<div id="toast"></div>
<script>
"use strict";
let state = null;
const seenProgress = {};  // agent -> the progress percents seen (tests read them)
const chosen = {};        // agent -> the snapshot type picked (kept across redraws)
const rank = { ok: 0, warning: 1, critical: 2 };
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) { if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v; }
  for (const c of children) if (c != null) e.append(c);
  return e;
}
function age(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 120) return Math.floor(s) + " s";
  if (s < 7200) return Math.floor(s / 60) + " min";
  if (s < 172800) return Math.floor(s / 3600) + " h";
  return Math.floor(s / 86400) + " d";
}
function bytes(n) { const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return (i ? n.toFixed(1) : n) + " " + u[i]; }
function toast(text) { const t = document.getElementById("toast"); t.textContent = text; t.classList.add("show"); clearTimeout(toast.timer); toast.timer = setTimeout(() => t.classList.remove("show"), 3000); }
async function send(agent, action, type) {
  try {
    const r = await fetch("/api/command", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ agent, action, type }) });
    toast(r.ok ? `${action} sent to ${agent}` : `${action}: ${(await r.text()).trim()}`);
  } catch (e) { toast(`${action}: ${e}`); }
}
function card(a) {
  const availability = a.availability || "unknown";
  const busy = a.state === "busy";
  const c = el("section", { class: "card " + availability, "data-agent": a.agent, "data-availability": availability, "data-state": a.state || "" });
  const badge = availability === "offline" ? el("span", { class: "badge offline" }, "offline")
    : busy ? el("span", { class: "badge busy" }, "busy: " + (a.job || "…") + (a.queue ? ` · ${a.queue} queued` : ""))
    : el("span", { class: "badge" }, (a.state || "?") + (a.queue ? ` · ${a.queue} queued` : ""));
  c.append(el("div", { class: "top" }, el("span", { class: "dot" }), el("span", { class: "name", title: a.agent }, a.agent), badge));
  if (a.progress && availability !== "offline") {
    const p = a.progress, pct = Math.max(0, Math.min(100, p.percent || 0));
    const seen = seenProgress[a.agent] = seenProgress[a.agent] || [];
    if (seen[seen.length - 1] !== pct) seen.push(pct);
    c.setAttribute("data-progress", String(pct));
    c.setAttribute("data-progress-history", seen.join(","));
    const bar = el("div", { class: "bar" }, el("div", {}));
    bar.firstChild.style.width = pct + "%";
    const detail = [p.finished ? null : p.phase, p.bytes_total ? `${bytes(p.bytes_done)} / ${bytes(p.bytes_total)}` : null, p.rate_bps ? bytes(p.rate_bps) + "/s" : null, !p.finished && p.eta_s != null ? `eta ${Math.round(p.eta_s)} s` : null].filter(Boolean).join(" · ");
    c.append(bar, el("div", { class: "job" }, el("span", {}, `${p.action} ${p.finished ? (pct >= 100 ? "done" : "ended") : pct.toFixed(0) + " %"}`), el("span", {}, detail)));
  } else if (seenProgress[a.agent] && seenProgress[a.agent].length) {
    c.setAttribute("data-progress-history", seenProgress[a.agent].join(","));
  }
  const last = Object.entries(a.last || {}).sort((x, y) => y[1].timestamp.localeCompare(x[1].timestamp));
  if (last.length) {
    const t = el("table");
    for (const [type, l] of last) {
      const stale = (Date.now() - Date.parse(l.timestamp)) > 86400e3;
      t.append(el("tr", {}, el("td", { class: l.ok ? "" : "failed" }, type + (l.ok ? "" : " (failed)")), el("td", { class: "age" + (stale ? " stale" : ""), "data-ts": l.timestamp }, age(l.timestamp) + " ago")));
    }
    c.append(t);
  } else c.append(el("div", { class: "job" }, "no snapshots yet"));
  const alerts = Object.entries(a.alerts || {}).sort();
  if (alerts.length) c.append(el("div", { class: "alerts" }, ...alerts.map(([check, level]) => el("span", { class: "chip " + level, title: level }, check.replace(/_/g, " ") + (level === "ok" ? "" : ": " + level)))));
  if (state.actions.length && availability === "online") {
    const row = el("div", { class: "actions" });
    if (state.actions.includes("create")) {
      const want = chosen[a.agent] || (state.types.includes("system") ? "system" : state.types[0]);
      const pick = el("select", { title: "snapshot type", onchange: (e) => { chosen[a.agent] = e.target.value; } }, ...state.types.map(t => el("option", { value: t, selected: t === want }, t)));
      row.append(pick, el("button", { onclick: () => send(a.agent, "create", pick.value), "data-action": "create" }, "Snapshot now"));
    }
    if (state.actions.includes("verify")) row.append(el("button", { onclick: () => send(a.agent, "verify"), "data-action": "verify" }, "Verify latest"));
    c.append(row);
  }
  return c;
}
function render() {
  const main = document.getElementById("agents");
  const agents = state.agents.slice().sort((x, y) => (x.availability === "offline") - (y.availability === "offline") || x.agent.localeCompare(y.agent));
  main.replaceChildren(...(agents.length ? agents.map(card) : [el("div", { class: "empty" }, `no agents under ${state.prefix}/status/ on ${state.broker}`)]));
  document.getElementById("n-online").textContent = agents.filter(a => a.availability === "online").length;
  document.getElementById("n-offline").textContent = agents.filter(a => a.availability === "offline").length;
  document.getElementById("n-busy").textContent = agents.filter(a => a.state === "busy" && a.availability !== "offline").length;
  document.getElementById("n-alerts").textContent = agents.filter(a => Object.values(a.alerts || {}).some(l => rank[l] > 0)).length;
  document.body.setAttribute("data-updated", String(Date.now()));
}
function connect() {
  const conn = document.getElementById("conn");
  const es = new EventSource("/events");
  es.onopen = () => { conn.textContent = "live · " + location.host; conn.classList.remove("down"); };
  es.onmessage = (m) => { state = JSON.parse(m.data); conn.textContent = "live · " + state.broker; render(); };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.classList.add("down"); };
}
setInterval(() => { for (const td of document.querySelectorAll("td.age")) td.textContent = age(td.dataset.ts) + " ago"; }, 1000);
connect();
</script>
</body>
</html>
"""#
}
