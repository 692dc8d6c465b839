// Live device table: polls the devices API and redraws; no framework, no CDN.
(function () {
  const table = document.getElementById("devices");
  const body = table.querySelector("tbody");
  const summary = document.getElementById("summary");

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      td.appendChild(span);
    } else {
      td.textContent = text;
    }
    return td;
  }

  function details(status) {
    return Object.entries(status || {}).map(([k, v]) => k + ": " + v).join(", ");
  }

  async function refresh() {
    try {
      const res = await fetch(table.dataset.source, { headers: { Accept: "application/json" } });
      if (res.status === 401) { window.location.reload(); return; }
      const data = await res.json();
      body.replaceChildren(...data.devices.map((d) => {
        const tr = document.createElement("tr");
        tr.dataset.device = d.kind + "/" + d.id;
        tr.append(cell(d.kind), cell(d.id), cell(d.state, "state " + d.state),
                  // Formatted by the server in the store's zone and locale, as every staff time is.
                  cell(d.last_seen_local || "never"),
                  cell(details(d.status)));
        return tr;
      }));
      const online = data.devices.filter((d) => d.state === "online").length;
      summary.textContent = online + " of " + data.devices.length + " devices online";
    } catch (err) {
      summary.textContent = "Cannot reach the store server: " + err;
    }
  }

  // The scanners: where each sends and how many of its scans had nowhere to go.
  const scanners = document.getElementById("scanners");
  const section = document.getElementById("scanners-section");

  function sendsTo(s) {
    const td = cell(s.sends_to);
    if (!s.assigned_to || !s.assigned_to.enrolled) {
      const strong = document.createElement("strong");
      strong.textContent = s.sends_to;
      td.replaceChildren(strong);
    }
    return td;
  }

  async function refreshScanners() {
    try {
      const res = await fetch(scanners.dataset.source, { headers: { Accept: "application/json" } });
      if (!res.ok) { return; }
      const data = await res.json();
      section.hidden = data.scanners.length === 0;
      scanners.querySelector("tbody").replaceChildren(...data.scanners.map((s) => {
        const tr = document.createElement("tr");
        tr.dataset.scanner = s.id;
        const missed = cell(String(s.unassigned_scans) +
          (s.last_unassigned_local ? " (last " + s.last_unassigned_local + ")" : ""));
        missed.className = "unassigned";
        tr.append(cell(s.id), sendsTo(s), cell(s.last_scan_local || "never"), missed);
        return tr;
      }));
    } catch (err) {
      // the devices table above already says the store server cannot be reached
    }
  }

  refresh();
  refreshScanners();
  setInterval(() => { refresh(); refreshScanners(); }, 2000);
})();
