// Receipts list and receipt page: the state of each receipt shown follows the printer
// without a reload (a reprint goes queued -> sending -> printed). Polls the edge's
// /staff/receipts/states every two seconds for the receipts on the page; no framework.
(function () {
  const list = document.getElementById("receipts");
  const one = document.getElementById("receipt");
  const root = list || one;
  if (!root) return;

  function jobs() {
    if (one) return [one.dataset.job];
    return Array.from(list.querySelectorAll("tr[data-job]")).map((tr) => tr.dataset.job);
  }

  function show(span, state) {
    span.textContent = state;
    span.className = "job " + state;
  }

  function update(job, info) {
    if (one) {
      show(document.getElementById("job-state"), info.state);
      document.getElementById("job-reason").textContent = info.reason || "—";
      document.getElementById("job-printed").textContent = info.printed || "—";
      const button = document.getElementById("reprint");
      if (button && info.state === "printed" && button.textContent !== "Print a copy") {
        button.textContent = "Print a copy";
        button.classList.remove("primary");
        const form = button.form;
        if (form && form.dataset.approveWhat) {
          form.dataset.approveWhat = form.dataset.approveWhat.replace("Print again",
                                                                      "Print a copy of");
        }
      }
      return;
    }
    const tr = list.querySelector('tr[data-job="' + job + '"]');
    if (!tr || tr.dataset.state === info.state) return;
    tr.dataset.state = info.state;
    show(tr.querySelector("span.job"), info.state);
    tr.querySelector("td.reason").textContent = info.reason;
  }

  async function refresh() {
    const wanted = jobs();
    if (!wanted.length) return;
    const query = wanted.map((j) => "job=" + encodeURIComponent(j)).join("&");
    try {
      const res = await fetch(root.dataset.states + "?" + query,
                              { headers: { Accept: "application/json" } });
      if (!res.ok) return;
      const data = await res.json();
      Object.entries(data.jobs).forEach(([job, info]) => update(job, info));
    } catch (err) {
      // The edge restarting: the next round tries again.
    }
  }

  setInterval(refresh, 2000);
})();
