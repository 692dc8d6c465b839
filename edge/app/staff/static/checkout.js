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
  const lastSaleBox = document.getElementById("last-sale");
  const lastSaleText = document.getElementById("last-sale-text");
  const linesTable = document.getElementById("lines");
  const linesBody = linesTable.querySelector("tbody");
  const itemEntry = document.getElementById("item-entry");
  const productForm = document.getElementById("product-form");
  const productCode = document.getElementById("product-code");
  const productQty = document.getElementById("product-qty");
  const categoryForm = document.getElementById("category-form");
  const categorySelect = document.getElementById("category");
  const lineAmount = document.getElementById("line-amount");
  const categoryQty = document.getElementById("category-qty");
  const replaceDialog = document.getElementById("replace-dialog");
  const replaceText = document.getElementById("replace-text");
  const replaceYes = document.getElementById("replace-yes");
  const replaceNo = document.getElementById("replace-no");
  const newSaleButton = document.getElementById("new-sale");
  const scannedLine = document.getElementById("scanned");
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const precision = Number(root.dataset.precision);
  const currencyFormat = new Intl.NumberFormat(root.dataset.locale, {
    style: "currency", currency: root.dataset.currency,
    minimumFractionDigits: precision, maximumFractionDigits: precision,
  });

  let sale = null;
  let lastRedeemed = null; // the last completed sale, which "Undo last sale" voids
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
    // lines: [{input: what the edge re-reads ({code, qty} or {cat, amount, qty}), line}]
    return { txn: "web-" + uuid7(), state: "open", touched: false, customer: null,
             customerCode: null, wallet: [], coupons: [], lines: [], basketMinor: null,
             result: null };
  }

  function linesMinor(lines) {
    return lines.reduce((sum, l) => sum + l.line.qty * l.line.unit_minor, 0);
  }

  // Minor units as the plain number a cashier would type ("12.48"), for the total field.
  function plain(minor) {
    const digits = String(minor).padStart(precision + 1, "0");
    return precision ? digits.slice(0, -precision) + "." + digits.slice(-precision) : digits;
  }

  // What the edge needs to price the sale: the lines, or else the typed total.
  function basketBody(lines) {
    return lines.length ? { lines: lines.map((l) => l.input) } : { total: total.value };
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
      customerBox.textContent =
        "No customer yet: scan the loyalty card or member code, or type the phone number.";
    }

    linesTable.hidden = sale.lines.length === 0;
    linesBody.replaceChildren(...sale.lines.map((l, i) => {
      const tr = document.createElement("tr");
      const cells = [l.line.name || l.line.sku, String(l.line.qty), money(l.line.unit_minor),
                     money(l.line.qty * l.line.unit_minor)];
      cells.forEach((text, k) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (k) td.className = "num";
        tr.append(td);
      });
      const cell = document.createElement("td");
      if (sale.state === "open") {
        const remove = document.createElement("button");
        remove.type = "button";
        remove.textContent = "Remove";
        remove.setAttribute("aria-label", "Remove " + (l.line.name || l.line.sku));
        remove.addEventListener("click", () => run(() => removeLine(i)));
        cell.append(remove);
      }
      tr.append(cell);
      return tr;
    }));
    itemEntry.hidden = sale.state !== "open"; // a closed sale is only for reading
    if (sale.lines.length) sale.basketMinor = linesMinor(sale.lines);

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

    // With items, the total is theirs. A typed total is what the coupons were priced on:
    // change it only with no coupon held.
    if (sale.lines.length) total.value = plain(sale.basketMinor);
    total.readOnly = sale.lines.length > 0 ||
      (sale.state === "open" && sale.coupons.length > 0);
    total.title = sale.lines.length ? "The total of the items"
      : total.readOnly ? "Undo the coupons to change the total" : "";
    redeemButton.disabled = sale.state !== "open";
    // "Undo last sale" is about the sale before: shown while no other sale is under way.
    const showLast = !!lastRedeemed && (sale === lastRedeemed || !sale.touched);
    lastSaleBox.hidden = !showLast;
    lastSaleText.textContent = showLast ? "Last sale " + lastRedeemed.txn + ": to pay was " +
      money(lastRedeemed.result.total_minor) + "." : "";
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
      if (sale.lines.length) total.value = ""; // that was the closed sale's total
      sale = freshSale();
      render();
    }
    return sale;
  }

  async function submitScan(code, replace) {
    const current = openSale();
    const answer = await post(root.dataset.scan, Object.assign({
      txn: current.txn, code: code, replace: !!replace,
      customer_on_sale: !!current.customer && code !== current.customerCode,
    }, basketBody(current.lines)));
    if (answer.action === "item") {
      await addLine(current, answer);
      return;
    }
    if (answer.action === "confirm_replace") {
      if (await askReplace(current, answer.what)) return submitScan(code, true);
      say(current.customer.display_name + " stays on the sale.");
      return;
    }
    current.touched = true;
    const reply = answer.reply;
    if (!reply.ok) {
      refuse(reply.error.message);
      return;
    }
    if (answer.action === "identify") {
      current.customer = reply.data.customer;
      current.customerCode = code;
      current.wallet = reply.data.wallet || [];
      say("Customer: " + reply.data.customer.display_name + ".");
    } else {
      const c = reply.data;
      c.scanned = code; // to price it again when the items change
      current.coupons = current.coupons.filter((x) => x.reservation !== c.reservation);
      current.coupons.push(c);
      current.basketMinor = answer.total_minor;
      say("Coupon applied: " + (c.description || c.coupon) + ", −" +
          money(c.discount_minor) + ".");
    }
  }

  // A second shopper's code while one is on the sale: the cashier decides, never silently.
  function askReplace(current, what) {
    replaceText.textContent = current.customer.display_name + " is on this sale. Replace " +
      "them with the shopper of this " + what + "?";
    return new Promise((resolve) => {
      function done(replace) {
        replaceYes.onclick = null;
        replaceNo.onclick = null;
        replaceDialog.oncancel = null;
        replaceDialog.close();
        scan.blur(); // a modal dialog leaves Chromium's text input behind: focus anew
        scan.focus();
        resolve(replace);
      }
      replaceYes.onclick = () => done(true);
      replaceNo.onclick = () => done(false);
      replaceDialog.oncancel = (event) => { event.preventDefault(); done(false); };
      replaceDialog.showModal();
      replaceNo.focus(); // Enter from a scanner must not replace the shopper
    });
  }

  // A checked line joins the sale (the same product again adds to its quantity); the held
  // coupons are priced again on the new basket.
  async function addLine(current, answer) {
    const before = current.lines.map((l) => ({ input: Object.assign({}, l.input),
                                               line: Object.assign({}, l.line) }));
    const input = Object.assign({ qty: 1 }, answer.input);
    const same = input.code ? current.lines.find((l) => l.input.code === input.code) : null;
    if (same) {
      same.input.qty += input.qty;
      same.line.qty += input.qty;
    } else {
      current.lines.push({ input: input, line: answer.line });
    }
    current.touched = true;
    if (!(await repriceCoupons(current))) {
      current.lines = before;
      return;
    }
    say("Added: " + input.qty + " × " + (answer.line.name || answer.line.sku) + ", " +
        money(answer.line.unit_minor) + " each.");
  }

  async function removeLine(index) {
    const current = sale;
    const before = current.lines.slice();
    const [gone] = current.lines.splice(index, 1);
    if (!(await repriceCoupons(current))) {
      current.lines = before;
      return;
    }
    if (!current.lines.length && !current.coupons.length) current.basketMinor = null;
    say("Removed: " + (gone.line.name || gone.line.sku) + ".");
  }

  // Held coupons were priced on the basket as it was: apply each again on the new one
  // (the same hold, priced again). A coupon the new basket no longer allows stops the
  // change: the cashier undoes that coupon first. False when the change was refused.
  // (txn.complete prices every coupon again on the final basket in any case.)
  async function repriceCoupons(current) {
    if (!current.coupons.length) return true;
    if (!current.lines.length) {
      refuse("Undo the coupons first: they need the items, or a typed basket total.");
      return false;
    }
    const priced = [];
    for (const c of current.coupons) {
      const answer = await post(root.dataset.scan, Object.assign(
        { txn: current.txn, code: c.scanned }, basketBody(current.lines)));
      if (!answer.reply || !answer.reply.ok) {
        refuse((c.description || c.coupon) + ": " +
               (answer.reply ? answer.reply.error.message : "not a coupon.") +
               " Undo this coupon before changing the items.");
        // A refused apply changes nothing at the edge: the holds stay as they were.
        return false;
      }
      priced.push(Object.assign(answer.reply.data, { scanned: c.scanned }));
    }
    current.coupons = priced;
    return true;
  }

  async function submitItem(input) {
    const current = openSale();
    const answer = await post(root.dataset.item, input);
    await addLine(current, answer);
  }

  async function redeem() {
    const current = sale;
    if (current.state !== "open") return; // a second click on a sale already redeemed
    current.touched = true;
    const answer = await post(root.dataset.redeem, Object.assign({
      txn: current.txn, discount_minor: discountMinor() }, basketBody(current.lines)));
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
    if (!current.coupons.length && !current.lines.length) current.basketMinor = null;
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
    const code = scan.value;
    scan.value = ""; // ready for the next scan while this one is answered
    enter(code);
  });

  // A code typed into the scan field with Enter, or pushed by the lane's scanner.
  function enter(typed) {
    const code = typed.trim();
    if (!code) {
      scan.focus();
      return;
    }
    run(() => submitScan(code));
  }

  // A scanned code as the page may show it: every control or invisible character written
  // out as \u{..}, cut to SHOWN characters. Only ever put in place as text, never as HTML.
  const SHOWN = 64;
  function visible(code) {
    const chars = Array.from(code);
    const shown = chars.slice(0, SHOWN).map((ch) => {
      const cp = ch.codePointAt(0);
      const invisible = cp < 0x20 || (cp >= 0x7f && cp < 0xa0) || cp === 0xad ||
        (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
        (cp >= 0x2066 && cp <= 0x2069) || cp === 0xfeff || cp === 0xfffd;
      return invisible ? "\\u{" + cp.toString(16) + "}" : ch;
    }).join("");
    return chars.length > SHOWN ? shown + "… (" + chars.length + " characters)" : shown;
  }

  // The lane's scanners, live from the edge: each scan is entered like a typed code.
  function listen() {
    if (!window.EventSource || !root.dataset.scans) return;
    const source = new EventSource(root.dataset.scans);
    source.addEventListener("ready", () => { root.dataset.live = "on"; });
    source.addEventListener("scan", (event) => {
      let pushed;
      try {
        pushed = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      if (!pushed || typeof pushed.code !== "string") return;
      scannedLine.textContent = "Scanned by " + String(pushed.scanner) + ": " +
        visible(pushed.code);
      scannedLine.hidden = false;
      enter(pushed.code);
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) { // refused (signed out, busy): later
        root.dataset.live = "off";
        setTimeout(listen, 5000);
      }
    });
  }
  productForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = { code: productCode.value.trim(), qty: productQty.value.trim() };
    run(async () => {
      await submitItem(input);
      if (!refusal.textContent) {
        productCode.value = "";
        productQty.value = "1";
      }
    });
  });
  categoryForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = { cat: categorySelect.value, amount: lineAmount.value.trim(),
                    qty: categoryQty.value.trim() };
    run(async () => {
      await submitItem(input);
      if (!refusal.textContent) {
        lineAmount.value = "";
        categoryQty.value = "1";
      }
    });
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
  listen();
})();
