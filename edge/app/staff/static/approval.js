// A manager's approval on a cashier's screen: a dialog where the manager types their user
// name and password. The edge checks them as a sign-in and answers an approval id that is
// good for the one action it was asked for. Used by the checkout page, and by any form with
// data-approve="<url>" (the receipt page's Reprint), which gets the id in its "approval" field.
(function () {
  let dialog = null;

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function element(tag, attrs, text) {
    const el = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => el.setAttribute(k, v));
    if (text) el.textContent = text;
    return el;
  }

  function build() {
    const d = element("dialog", { id: "approval", class: "approval card",
                                  "aria-labelledby": "approval-title" });
    const form = element("form", { id: "approval-form", autocomplete: "off", novalidate: "" });
    const title = element("h2", { id: "approval-title" }, "Manager approval");
    const what = element("p", { id: "approval-what" });
    const userLabel = element("label", {}, "Manager user name");
    const user = element("input", { id: "approval-user", name: "username", autocomplete: "off",
                                    autocapitalize: "off", spellcheck: "false" });
    userLabel.append(user);
    const pwLabel = element("label", {}, "Manager password");
    const pw = element("input", { id: "approval-password", name: "password", type: "password",
                                  autocomplete: "off" });
    pwLabel.append(pw);
    const error = element("p", { id: "approval-error", class: "error", "aria-live": "assertive" });
    const buttons = element("div", { class: "actions" });
    const ok = element("button", { type: "submit", class: "primary", id: "approval-ok" },
                       "Approve");
    const cancel = element("button", { type: "button", id: "approval-cancel" }, "Cancel");
    buttons.append(ok, cancel);
    form.append(title, what, userLabel, pwLabel, error, buttons);
    d.append(form);
    document.body.append(d);
    return { d, form, what, user, pw, error, ok, cancel };
  }

  // Resolves to {approval, manager} once a manager approved, or null when cancelled.
  function ask(url, body, whatText) {
    dialog = dialog || build();
    const { d, form, what, user, pw, error, ok, cancel } = dialog;
    what.textContent = whatText;
    error.textContent = "";
    user.value = "";
    pw.value = "";
    return new Promise((resolve) => {
      function done(result) {
        form.onsubmit = null;
        cancel.onclick = null;
        d.oncancel = null;
        pw.value = ""; // the password never stays on the page
        d.close();
        resolve(result);
      }
      form.onsubmit = async (event) => {
        event.preventDefault();
        ok.disabled = true;
        error.textContent = "";
        try {
          const res = await fetch(url, {
            method: "POST", credentials: "same-origin",
            headers: { "Content-Type": "application/json", Accept: "application/json",
                       "X-CSRFToken": csrfToken() },
            body: JSON.stringify(Object.assign({}, body,
                                               { username: user.value, password: pw.value })),
          });
          const answer = await res.json().catch(() => ({}));
          if (res.ok && answer.approval) {
            done({ approval: answer.approval, manager: answer.manager });
            return;
          }
          error.textContent = answer.error ? answer.error.message
            : "The store server answered " + res.status + ".";
          pw.value = "";
          pw.focus();
        } catch (err) {
          error.textContent = "The store server could not be reached: " + err.message;
        } finally {
          ok.disabled = false;
        }
      };
      cancel.onclick = () => done(null);
      d.oncancel = (event) => { event.preventDefault(); done(null); };
      d.showModal();
      user.focus();
    });
  }

  window.StaffApproval = { ask };

  // Forms that need a manager when a cashier sends them.
  document.querySelectorAll("form[data-approve]").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      const field = form.querySelector('input[name="approval"]');
      if (field.value) return; // approved: on its way
      event.preventDefault();
      const answer = await ask(form.dataset.approve, {}, form.dataset.approveWhat || "");
      if (!answer) return;
      field.value = answer.approval;
      form.submit();
    });
  });
})();
