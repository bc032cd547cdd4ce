// Modal dialogs: the one-time credentials dialog and confirmations. They
// use the <dialog> element, which traps focus and closes with Escape, and
// they remove their content when closed: a credential exists only in this
// dialog's text, never in the URL, browser storage or a log.

import { h, field } from "./dom.js";

function open(dialog) {
  document.body.appendChild(dialog);
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const v = dialog.returnValue;
      dialog.replaceChildren();
      dialog.remove();
      resolve(v);
    });
  });
}

// copyButton copies the text of input to the clipboard.
function copyButton(input, what) {
  const b = h("button", { type: "button", class: "small secondary" }, `Copy ${what}`);
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(input.value);
      b.textContent = "Copied";
    } catch {
      input.select();
      b.textContent = "Selected: press Ctrl+C";
    }
  });
  return b;
}

function secretField(label, value, what) {
  const input = h("input", { type: "text", readonly: true, value, spellcheck: "false", autocomplete: "off", class: "secret", "data-credential": what });
  input.addEventListener("focus", () => input.select());
  return h("div", { class: "secret-row" }, field(label, input), copyButton(input, what));
}

// showCredentials shows newly issued credentials once. values may hold
// token, secret, key and keyID; path is a gateway path to try them on, in
// ready curl lines.
export function showCredentials(title, values, username, path) {
  const rows = [];
  let curl = "";
  if (values.token) {
    rows.push(secretField("Access token", values.token, "token"));
    curl = `curl -H "Authorization: Bearer ${values.token}" "$GATEWAY${path}"`;
  }
  if (values.secret) rows.push(secretField("Secret", values.secret, "secret"));
  if (values.key) rows.push(secretField(`Key ${values.keyID || ""}`.trim(), values.key, "key"));
  if (!curl && values.key && values.secret) curl = `curl -u '${username}:${values.key}:${values.secret}' "$GATEWAY${path}"`;
  if (curl && values.key && values.secret && values.token) curl += `\ncurl -u '${username}:${values.key}:${values.secret}' "$GATEWAY${path}"`;
  const curlArea = h("textarea", { readonly: true, rows: 5, spellcheck: "false", class: "secret", "data-credential": "curl" });
  curlArea.value = curl;
  const dialog = h(
    "dialog",
    { class: "credentials", "aria-labelledby": "cred-h" },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: "cred-h" }, title),
      h("p", { class: "msg warn" }, h("strong", {}, "You will not see this again. "), "Copy each value into your secret manager now: only a hash is kept."),
      rows,
      curl ? [field("Try it against the gateway (set GATEWAY to its URL, such as http://localhost:8080)", curlArea), copyButton(curlArea, "curl command")] : null,
      h("div", { class: "actions" }, h("button", { type: "submit", value: "done" }, "I have stored it")),
    ),
  );
  return open(dialog);
}

// confirmDialog asks before a change; with mustType, the user must type
// that text (the username) to confirm. It resolves to true to go ahead.
export async function confirmDialog(title, text, action, mustType) {
  const input = mustType ? h("input", { type: "text", autocomplete: "off", spellcheck: "false" }) : null;
  const go = h("button", { type: "submit", value: "yes", class: "danger", disabled: Boolean(mustType) }, action);
  if (input) input.addEventListener("input", () => (go.disabled = input.value !== mustType));
  const dialog = h(
    "dialog",
    { "aria-labelledby": "confirm-h" },
    h("form", { method: "dialog" }, h("h2", { id: "confirm-h" }, title), h("p", {}, text), input ? field(`Type ${mustType} to confirm`, input) : null, h("div", { class: "actions" }, go, h("button", { type: "submit", value: "no", class: "secondary" }, "Cancel"))),
  );
  return (await open(dialog)) === "yes";
}
