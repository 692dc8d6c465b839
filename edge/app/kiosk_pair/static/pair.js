// The pairing screen asks the edge every 2 s whether its code was entered; once it was, the
// answer carries the kiosk's credential cookie and the page goes to the kiosk's pages. An
// expired code is replaced by a new one (the page loads again). No framework, no CDN.
(function () {
  const source = document.body.dataset.status;
  const state = document.getElementById("state");

  async function poll() {
    try {
      const res = await fetch(source, { headers: { Accept: "application/json" },
                                        cache: "no-store", credentials: "same-origin" });
      const data = await res.json();
      if (data.state === "paired" && data.go) {
        state.textContent = "Paired.";
        window.location.replace(data.go);
        return;
      }
      if (data.state === "expired" || data.state === "unknown") {
        window.location.replace(window.location.pathname);
        return;
      }
      state.textContent = "";
    } catch (err) {
      state.textContent = "The store server does not answer; trying again.";
    }
    window.setTimeout(poll, 2000);
  }

  window.setTimeout(poll, 2000);
})();
