// Staff checkout: a browser lane. Every action is one POST whose answer carries the edge's
// reply envelope; the page only keeps the sale on screen. No framework, no CDN.
(function () {
  const root = document.getElementById("checkout");
  const form = document.getElementById("scan-form");
  const scan = document.getElementById("scan");
  const total = document.getElementById("total");
  const refusal = document.getElementById("refusal");
  const notice = document.getElementById("notice");
  const txnLabel = document.getElementById("txn");
  const stateLabel = document.getElementById("sale-state");
  const customerBox = document.getElementById("customer");
  const couponList = document.getElementById("coupons");
  const basketCell = document.getElementById("basket-total");
  const discountCell = document.getElementById("discount-total");
  const toPayCell = document.getElementById("to-pay");
  const redeemButton = document.getElementById("redeem");
  const voidButton = document.getElementById("void");
  const newSaleButton = document.getElementById("new-sale");
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const precision = Number(root.dataset.precision);
  const currencyFormat = new Intl.NumberFormat(root.dataset.locale, {
    style: "currency", currency: root.dataset.currency,
    minimumFractionDigits: precision, maximumFractionDigits: precision,
  });

  let sale = null;
  let lastRedeemed = null; // the last completed sale, which "Undo sale" voids
  let queue = Promise.resolve(); // one request at a time, in scan order

  // A time-ordered id (UUIDv7 layout); crypto.randomUUID needs HTTPS, getRandomValues not.
  function uuid7() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    let ms = Date.now();
    for (let i = 5; i >= 0; i--) { b[i] = ms % 256; ms = Math.floor(ms / 256); }
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20),
            hex.slice(20)].join("-");
  }

  // Minor units as a decimal string, so no amount ever passes through a float.
  function money(minor) {
    const digits = String(Math.abs(minor)).padStart(precision + 1, "0");
    const text = precision ? digits.slice(0, -precision) + "." + digits.slice(-precision) : digits;
    return currencyFormat.format((minor < 0 ? "-" : "") + text);
  }

  function freshSale() {
    return { txn: "web-" + uuid7(), state: "open", touched: false, customer: null,
             wallet: [], coupons: [], basketMinor: null, result: null };
  }

  function discountMinor() {
    return sale.coupons.reduce((sum, c) => sum + c.discount_minor, 0);
  }

  function say(text) {
    notice.textContent = text;
  }

  function refuse(text) {
    refusal.textContent = text;
    refusal.hidden = false;
  }

  function clearMessages() {
    refusal.hidden = true;
    refusal.textContent = "";
    notice.textContent = "";
  }

  function render() {
    txnLabel.textContent = sale.txn;
    const label = { open: "open", completed: "redeemed", voided: "voided" }[sale.state];
    stateLabel.textContent = label;
    stateLabel.className = "sale-state " + sale.state;

    if (sale.customer) {
      const c = sale.customer;
      customerBox.className = "customer";
      const name = document.createElement("strong");
      name.textContent = c.display_name;
      const tier = document.createElement("span");
      tier.className = "tier";
      tier.textContent = c.tier;
      const points = document.createElement("span");
      points.textContent = c.points + " points";
      const parts = [name, tier, points];
      if (sale.wallet.length) {
        const wallet = document.createElement("span");
        wallet.className = "wallet";
        wallet.textContent = sale.wallet.length + " coupon" +
          (sale.wallet.length === 1 ? "" : "s") + " in the app";
        parts.push(wallet);
      }
      customerBox.replaceChildren(...parts);
    } else {
      customerBox.className = "customer empty";
      customerBox.textContent = "No customer yet: scan the member code or loyalty card.";
    }

    couponList.replaceChildren(...sale.coupons.map((c) => {
      const li = document.createElement("li");
      li.dataset.reservation = c.reservation;
      const desc = document.createElement("span");
      desc.className = "description";
      desc.textContent = c.description || c.coupon;
      const amount = document.createElement("span");
      amount.className = "amount";
      amount.textContent = "−" + money(c.discount_minor);
      li.append(desc, amount);
      if (sale.state === "open") {
        const undo = document.createElement("button");
        undo.type = "button";
        undo.textContent = "Undo";
        undo.setAttribute("aria-label", "Undo coupon " + (c.description || c.coupon));
        undo.addEventListener("click", () => run(() => removeCoupon(c)));
        li.append(undo);
      } else {
        const badge = document.createElement("span");
        badge.className = "badge " + sale.state;
        badge.textContent = sale.state === "completed" ? "redeemed" : "given back";
        li.append(badge);
      }
      return li;
    }));

    const discount = sale.result ? sale.result.discount_minor : discountMinor();
    basketCell.textContent = sale.basketMinor === null ? "–" : money(sale.basketMinor);
    discountCell.textContent = sale.coupons.length ? "−" + money(discount) : "–";
    toPayCell.textContent = sale.basketMinor === null ? "–"
      : money(Math.max(sale.basketMinor - discount, 0));

    // The total is what the coupons were priced on: change it only with no coupon held.
    total.readOnly = sale.state === "open" && sale.coupons.length > 0;
    total.title = total.readOnly ? "Undo the coupons to change the total" : "";
    redeemButton.disabled = sale.state !== "open";
    voidButton.hidden = !lastRedeemed;
    voidButton.title = lastRedeemed ? "Void sale " + lastRedeemed.txn + " (to pay was " +
      money(lastRedeemed.result.total_minor) + ") and give its coupons back" : "";
  }

  async function post(url, body) {
    const res = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json",
                 "X-CSRFToken": csrfToken },
      body: JSON.stringify(body),
    });
    if (res.status === 401) {
      window.location.reload(); // the session ended: back to the sign-in page
      throw new Error("Signed out.");
    }
    let answer;
    try {
      answer = await res.json();
    } catch (err) {
      throw new Error("The store server answered " + res.status + ".");
    }
    if (!res.ok) {
      const err = new Error(answer.error ? answer.error.message : "The store server answered " +
                            res.status + ".");
      err.reason = answer.error && answer.error.detail ? answer.error.detail.reason : null;
      throw err;
    }
    return answer;
  }

  // A closed sale on screen is only for reading: the next scan starts a new one.
  function openSale() {
    if (sale.state !== "open") {
      sale = freshSale();
      render();
    }
    return sale;
  }

  async function submitScan(code) {
    const current = openSale();
    current.touched = true;
    const answer = await post(root.dataset.scan,
                              { txn: current.txn, code: code, total: total.value });
    const reply = answer.reply;
    if (!reply.ok) {
      refuse(reply.error.message);
      return;
    }
    if (answer.action === "identify") {
      current.customer = reply.data.customer;
      current.wallet = reply.data.wallet || [];
      say("Customer: " + reply.data.customer.display_name + ".");
    } else {
      const c = reply.data;
      current.coupons = current.coupons.filter((x) => x.reservation !== c.reservation);
      current.coupons.push(c);
      current.basketMinor = answer.total_minor;
      say("Coupon applied: " + (c.description || c.coupon) + ", −" +
          money(c.discount_minor) + ".");
    }
  }

  async function redeem() {
    const current = sale;
    if (current.state !== "open") return; // a second click on a sale already redeemed
    current.touched = true;
    const answer = await post(root.dataset.redeem, {
      txn: current.txn, total: total.value, discount_minor: discountMinor() });
    const reply = answer.reply;
    if (!reply.ok) {
      refuse(reply.error.message);
      return;
    }
    const result = reply.data;
    current.state = "completed";
    current.result = result;
    current.basketMinor = answer.total_minor;
    const redeemed = new Set(result.redemptions.map((r) => r.reservation));
    current.coupons = current.coupons.filter((c) => redeemed.has(c.reservation));
    result.redemptions.forEach((r) => {
      const c = current.coupons.find((x) => x.reservation === r.reservation);
      c.discount_minor = r.discount_minor;
    });
    lastRedeemed = current;
    total.value = "";
    const n = result.redemptions.length;
    say(n ? "Redeemed: " + n + " coupon" + (n === 1 ? "" : "s") + ", " +
            money(result.discount_minor) + " off. To pay " + money(result.total_minor) + "."
          : "Sale completed without coupons. To pay " + money(result.total_minor) + ".");
    if (result.released.length) {
      refuse("Not redeemed: " + result.released.map((r) => r.message).join(" "));
    }
  }

  async function removeCoupon(coupon) {
    const current = sale;
    const answer = await post(root.dataset.remove,
                              { txn: current.txn, reservation: coupon.reservation });
    if (!answer.reply.ok) {
      refuse(answer.reply.error.message);
      return;
    }
    current.coupons = current.coupons.filter((c) => c.reservation !== coupon.reservation);
    if (!current.coupons.length) current.basketMinor = null;
    say("Coupon taken off: " + (coupon.description || coupon.coupon) + ".");
  }

  // Voids a completed sale; a cashier gets a manager's approval on this screen first.
  async function voidCompleted(txn) {
    try {
      return await post(root.dataset.void, { txn: txn });
    } catch (err) {
      if (err.reason !== "manager_required") throw err;
    }
    const approved = await window.StaffApproval.ask(root.dataset.approve, { txn: txn },
      "Undo sale " + txn + " and give its coupons back.");
    if (!approved) return null;
    say("Approved by " + approved.manager + ".");
    return post(root.dataset.void, { txn: txn, approval: approved.approval });
  }

  async function voidLast() {
    const target = lastRedeemed;
    const answer = await voidCompleted(target.txn);
    if (!answer) {
      refuse("Sale " + target.txn + " was not undone: no manager approved it.");
      return;
    }
    if (!answer.reply.ok) {
      refuse(answer.reply.error.message);
      return;
    }
    const n = answer.reply.data.reversed.length;
    target.state = "voided";
    lastRedeemed = null;
    say("Sale " + target.txn + " voided" +
        (n ? ": " + n + " coupon" + (n === 1 ? "" : "s") + " given back." : "."));
  }

  async function newSale() {
    // An abandoned open sale would hold its coupons for minutes: give them back now.
    if (sale.state === "open" && sale.touched) {
      const answer = await post(root.dataset.void, { txn: sale.txn });
      if (!answer.reply.ok && answer.reply.error.code !== "txn_unknown") {
        refuse(answer.reply.error.message);
      }
    }
    sale = freshSale();
    total.value = "";
    say("New sale.");
  }

  // Runs one action after the previous finished; the scan field gets the focus back.
  function run(action) {
    queue = queue.then(async () => {
      clearMessages();
      try {
        await action();
      } catch (err) {
        refuse(err.message || String(err));
      }
      render();
      scan.focus();
    });
    return queue;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (document.activeElement === total) { // Enter in the total: on to the scan field
      scan.focus();
      return;
    }
    const code = scan.value.trim();
    scan.value = ""; // ready for the next scan while this one is answered
    if (!code) {
      scan.focus();
      return;
    }
    run(() => submitScan(code));
  });
  redeemButton.addEventListener("click", () => run(redeem));
  voidButton.addEventListener("click", () => run(voidLast));
  newSaleButton.addEventListener("click", () => run(newSale));
  // A click on nothing in particular must not leave the scanner typing into the void.
  document.addEventListener("click", (event) => {
    if (!event.target.closest("input, button, a, select, textarea, label")) scan.focus();
  });

  sale = freshSale();
  render();
  scan.focus();
})();
