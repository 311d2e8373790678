// edgecut dashboard: live regions. The server renders every page; this file keeps it current.
// On a Server-Sent Event that concerns the page, the page's own URL is fetched again and each
// element marked data-live is replaced by its new version (same id). Forms are never inside one.
(function () {
  "use strict";
  const body = document.body;
  const device = body.dataset.device || "";
  const badge = document.getElementById("live");
  let timer = null;
  let inflight = false;
  let again = false;

  async function refresh() {
    if (inflight) { again = true; return; }
    inflight = true;
    try {
      const r = await fetch(location.href, { headers: { "Accept": "text/html" }, cache: "no-store" });
      if (r.ok) {
        const doc = new DOMParser().parseFromString(await r.text(), "text/html");
        document.querySelectorAll("[data-live]").forEach(function (el) {
          const next = doc.getElementById(el.id);
          if (next) el.replaceWith(next);
        });
        body.dataset.refreshed = String(Date.now());
        document.dispatchEvent(new CustomEvent("edgecut:refreshed"));
      }
    } catch (e) {
      // the server restarting: the next event or the reconnect tries again
    } finally {
      inflight = false;
      if (again) { again = false; schedule(); }
    }
  }

  function schedule() {
    if (timer === null) timer = setTimeout(function () { timer = null; refresh(); }, 250);
  }

  function concerns(notice) {
    if (!device) return true;
    return notice.device_id === device || notice.kind === "rollout" || notice.kind === "command";
  }

  function connect() {
    const es = new EventSource("/api/v1/events");
    es.addEventListener("hello", function () {
      badge.textContent = "live"; badge.className = "live on";
      schedule();  // anything missed while disconnected
    });
    ["needs", "state", "telemetry", "swap", "offer", "job", "rollout", "command", "ack", "download", "refinement"].forEach(function (kind) {
      es.addEventListener(kind, function (ev) {
        let notice = {};
        try { notice = JSON.parse(ev.data); } catch (e) { return; }
        if (concerns(notice)) {
          schedule();
          document.dispatchEvent(new CustomEvent("edgecut:" + kind, { detail: notice }));
        }
      });
    });
    es.onerror = function () { badge.textContent = "reconnecting"; badge.className = "live off"; };
  }

  // filters: submit on change (a GET form, so the URL says what is shown)
  const filters = document.getElementById("filters");
  if (filters) filters.addEventListener("change", function () { filters.submit(); });

  window.edgecut = { refresh: refresh };
  connect();
})();
