// The kiosk page's little script: live scans on the attract and identify pages, the
// on-screen keypad, and on the shopper's home the idle timer with its warning
// (WCAG 2.2.1: at least 20 s to ask for more time). Nothing is kept in the browser's
// storage; the page forgets the shopper by leaving for the attract page.
(function () {
  "use strict";
  const body = document.body;
  const idleMs = Number(body.dataset.idleS || 60) * 1000;
  const WARN_MS = 20000;

  function post(url, data) {
    const form = new URLSearchParams(data || {});
    return fetch(url, { method: "POST", body: form, credentials: "same-origin",
                        headers: { Accept: "application/json" } });
  }

  // ---------------------------------------------------------------- live scans
  // Every code the kiosk's scanner reads comes here (server-sent events) and goes to the
  // edge, which says what it is: a product (its price), or a shopper (their home page).
  const priceBox = document.getElementById("price");

  function showPrice(answer) {
    document.getElementById("price-name").textContent = answer.name;
    document.getElementById("price-value").textContent = answer.price;
    const list = document.getElementById("price-offers");
    list.replaceChildren(...(answer.offers || []).map((title) => {
      const li = document.createElement("li");
      li.textContent = title;
      return li;
    }));
    priceBox.hidden = false;
    document.getElementById("price-close").focus();
  }
  document.getElementById("price-close").addEventListener("click", () => { priceBox.hidden = true; });

  function scanned(scan) {
    const status = document.getElementById("scan-status") || document.getElementById("print-status");
    post(body.dataset.scan, { code: scan.code, symbology: scan.symbology || "" }).then(async (res) => {
      const answer = await res.json().catch(() => ({}));
      if (answer.ok && answer.kind === "price") { showPrice(answer); return; }
      if (answer.ok && answer.next) { window.location.replace(answer.next); return; }
      if (status) { status.hidden = false; status.textContent = answer.message || ""; }
    }).catch(() => {});
  }

  // The stream is refused while the store server has no room for another (it answers
  // 503, and a browser's EventSource then gives up for good): open it again a moment
  // later, waiting twice as long each time, up to 30 s.
  function openFeed(delay) {
    const feed = new EventSource(body.dataset.scans);
    // Tests and the benchmark wait for this before showing a code to the scanner.
    feed.addEventListener("ready", () => { body.dataset.live = "on"; delay = 1000; });
    feed.addEventListener("error", () => {
      body.dataset.live = "off";
      if (feed.readyState === EventSource.CLOSED) {
        setTimeout(() => openFeed(Math.min(delay * 2, 30000)), delay);
      }
    });
    feed.addEventListener("scan", (event) => {
      let scan = null;
      try { scan = JSON.parse(event.data); } catch (err) { return; }
      if (scan && typeof scan.code === "string") scanned(scan);
    });
    window.addEventListener("pagehide", () => feed.close());
  }
  if (window.EventSource) openFeed(1000);

  // ---------------------------------------------------------------- keypad
  document.querySelectorAll(".keypad-form").forEach((form) => {
    const display = form.querySelector(".display");
    form.querySelectorAll(".key").forEach((key) => {
      key.addEventListener("click", () => {
        const k = key.dataset.key;
        if (k === "back") display.value = display.value.slice(0, -1);
        else if (display.value.length < Number(display.maxLength || 20)) display.value += k;
      });
    });
  });

  // ---------------------------------------------------------------- clip once
  // A second tap while the first is on its way does nothing (the edge clips once anyway).
  document.querySelectorAll(".clip-form").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (form.dataset.sent) { event.preventDefault(); return; }
      form.dataset.sent = "1";
      form.querySelector("button").setAttribute("aria-disabled", "true");
    });
  });

  // ---------------------------------------------------------------- print
  // One press prints (the edge prints each offer once a session); the screen then follows
  // the job and says in words what the printer is doing, paper out included.
  const printStatus = document.getElementById("print-status");
  function follow(url, tries) {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((res) => res.json()).then((answer) => {
        if (!answer.ok) return;
        printStatus.hidden = false;
        printStatus.textContent = answer.message;
        if (answer.state !== "printed" && answer.state !== "failed" && tries < 600) {
          setTimeout(() => follow(url, tries + 1), 1000);
        }
      }).catch(() => {});
  }
  document.querySelectorAll("button.print").forEach((button) => {
    button.addEventListener("click", () => {
      if (button.dataset.sent) return;
      button.dataset.sent = "1";
      button.setAttribute("aria-disabled", "true");
      post(body.dataset.print, { campaign: button.dataset.campaign }).then(async (res) => {
        const answer = await res.json().catch(() => ({}));
        if (answer.ok) { follow(answer.status, 0); return; }
        printStatus.hidden = false;
        printStatus.textContent = answer.message || "";
      }).catch(() => {});
    });
  });

  // ---------------------------------------------------------------- idle timeout
  // On every page of an identified shopper (those with the warning dialog).
  const warning = document.getElementById("idle-warning");
  if (warning) {
    const left = document.getElementById("idle-left");
    const more = document.getElementById("more-time");
    let last = Date.now();
    let ending = false;

    function end() {
      if (ending) return;
      ending = true;
      // The server ends the session and clears its cookie; the page leaves at once, so
      // nothing of the shopper stays on the screen even if the request is slow.
      const form = document.getElementById("done-form");
      form.querySelector("input[name=why]").value = "timeout";
      form.submit();
    }

    function touched() {
      last = Date.now();
      if (!warning.hidden) { warning.hidden = true; }
      post(body.dataset.alive).then((res) => { if (res.status === 401) end(); }).catch(() => {});
    }

    ["pointerdown", "keydown"].forEach((type) =>
      document.addEventListener(type, (event) => {
        if (warning.hidden || event.target === more) touched();
      }, { passive: true }));
    more.addEventListener("click", touched);

    setInterval(() => {
      const idle = Date.now() - last;
      if (idle >= idleMs) { end(); return; }
      if (idle >= idleMs - WARN_MS) {
        if (warning.hidden) { warning.hidden = false; more.focus(); }
        left.textContent = String(Math.ceil((idleMs - idle) / 1000));
      }
    }, 250);
  }
})();
