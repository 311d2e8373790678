// Device page: latency and memory charts (uPlot, vendored) and the operator controls.
(function () {
  "use strict";
  const device = document.body.dataset.device;
  const api = "/api/v1/devices/" + encodeURIComponent(device);
  let latency = null;
  let memory = null;

  function width(el) { return Math.max(320, el.clientWidth - 8); }

  function make(el, series, yLabel) {
    return new uPlot({
      width: width(el), height: 220,
      series: [{}].concat(series),
      axes: [{}, { label: yLabel }],
      scales: { x: { time: true } },
    }, [[], ...series.map(function () { return []; })], el);
  }

  async function draw() {
    const r = await fetch(api + "/telemetry?limit=500", { cache: "no-store" });
    if (!r.ok) return;
    const samples = (await r.json()).samples;
    const t = samples.map(function (s) { return s.at; });
    const latEl = document.getElementById("chart-latency");
    const memEl = document.getElementById("chart-memory");
    if (!latency) {
      latency = make(latEl, [
        { label: "p50 ms", stroke: "#2f6fde", width: 2 },
        { label: "p95 ms", stroke: "#d9480f", width: 2 },
      ], "ms");
      memory = make(memEl, [{ label: "RSS MiB", stroke: "#2b8a3e", width: 2 }], "MiB");
    }
    latency.setData([t, samples.map(function (s) { return s.latency_p50_ms; }),
                     samples.map(function (s) { return s.latency_p95_ms; })]);
    memory.setData([t, samples.map(function (s) { return s.rss_bytes / 1048576; })]);
    latEl.dataset.points = String(samples.length);
  }

  let pending = null;
  document.addEventListener("edgecut:telemetry", function () {
    if (pending === null) pending = setTimeout(function () { pending = null; draw(); }, 500);
  });
  window.addEventListener("resize", function () {
    if (latency) latency.setSize({ width: width(document.getElementById("chart-latency")), height: 220 });
    if (memory) memory.setSize({ width: width(document.getElementById("chart-memory")), height: 220 });
  });
  draw();

  // controls: each form posts one operator command to the JSON API
  const result = document.getElementById("command-result");

  // the line under the controls says how the last command ended once the device answered
  async function landed(id) {
    if (!result || result.dataset.command !== id) return;
    const r = await fetch("/api/v1/commands/" + encodeURIComponent(id), { cache: "no-store" });
    if (!r.ok) return;
    const c = await r.json();
    if (c.state === "sent" || result.dataset.command !== id) return;
    result.textContent = c.action + (c.state === "ok" ? " done by the device" : " failed: " + (c.message || "no reason given"));
    result.dataset.state = c.state;
  }
  document.addEventListener("edgecut:command", function (ev) {
    const n = ev.detail || {};
    if (n.id && n.result !== "sent") landed(n.id);
  });
  document.querySelectorAll("#controls form").forEach(function (form) {
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      const action = form.dataset.action;
      const payload = { action: action };
      if (action === "set_tasks") {
        payload.tasks = form.elements.tasks.value.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
      }
      result.textContent = "sending " + action + "…";
      try {
        const r = await fetch(api + "/commands", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(payload),
        });
        const body = await r.json();
        if (r.ok) {
          result.textContent = action + " sent (" + body.command_id.slice(0, 8) + "); waiting for the device";
          result.dataset.command = body.command_id;
          landed(body.command_id);  // its ack may have come before this answer
        } else {
          result.textContent = "refused: " + (body.detail || r.statusText);
        }
      } catch (e) {
        result.textContent = "could not reach the server: " + e;
      }
      window.edgecut.refresh();
    });
  });
})();
