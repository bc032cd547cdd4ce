// Building the page without HTML strings: every element is made with
// createElement and every text is set with textContent, so whatever a user
// typed (a friendly name, a description) is shown as text and can never
// become markup or script.

// h makes an element: h("a", {href: "#/x", class: "btn"}, "text", child...).
// Attributes starting with "on" become event listeners; false and null
// attributes are left out; strings among the children become text nodes.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "value") {
      el.value = v;
    } else if (k === "checked" || k === "selected" || k === "disabled" || k === "multiple" || k === "required") {
      el[k] = Boolean(v);
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// replace empties el and puts children in it.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let idSeq = 0;
// uid returns a fresh element ID, for label for= and aria-describedby.
export function uid(prefix) {
  idSeq += 1;
  return `${prefix}-${idSeq}`;
}

// field is a labelled control: a label, the control, and an optional hint
// tied to it with aria-describedby.
export function field(label, control, hint) {
  const id = control.id || uid("f");
  control.id = id;
  const parts = [h("label", { for: id }, label), control];
  if (hint) {
    const hid = uid("hint");
    control.setAttribute("aria-describedby", hid);
    parts.push(h("p", { class: "hint", id: hid }, hint));
  }
  return h("div", { class: "field" }, parts);
}

// when formats an RFC 3339 time for people, or "never".
export function when(t) {
  if (!t) return "never";
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return t;
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/:\d\dZ$/, "Z");
}
