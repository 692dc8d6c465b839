// Keeps the dashboard's figures fresh: fetches the live part of the page (same origin, the
// same template as the first render) every few seconds and swaps it in.
(() => {
  "use strict";
  const live = document.getElementById("live");
  if (!live) return;
  const every = Number(live.dataset.refresh || 10) * 1000;

  async function refresh() {
    if (document.hidden) return;  // a background tab need not poll the hub
    try {
      const reply = await fetch(live.dataset.src, {credentials: "same-origin",
                                                   headers: {"Accept": "text/html"}});
      if (reply.status === 401) {  // signed out elsewhere or the session ended
        window.location.reload();
        return;
      }
      if (!reply.ok) throw new Error("HTTP " + reply.status);
      live.innerHTML = await reply.text();
    } catch (err) {
      const note = live.querySelector(".updated");
      if (note) {
        note.classList.add("failed");
        note.textContent = "Could not refresh (" + err.message + "); trying again.";
      }
    }
  }

  setInterval(refresh, every);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });

  // Typing a date means a custom period.
  for (const input of document.querySelectorAll(".controls input.date")) {
    input.addEventListener("input", () => {
      const custom = document.querySelector('.controls input[value="custom"]');
      if (custom) custom.checked = true;
    });
  }
})();
