// The console of API users: orgs and products, team lists, a user page
// with its usage, keys, "try a request" and change history, the create and edit
// form with the allowed-endpoints picker, roles and the endpoint catalog.
// It is built on the management API alone. The location hash names only
// what is shown (an org, a product, a username), never a credential.

import { h, replace, field, uid, when } from "./dom.js";
import { call, get, teamPath, userPath, APIError } from "./api.js";
import { showCredentials, confirmDialog } from "./dialogs.js";
import { usageSection } from "./usage.js";

const main = document.getElementById("main");
const status = document.getElementById("status");

// say announces a message in the live region, for screen readers and
// everyone else.
function say(text, kind = "info") {
  replace(status, text ? h("p", { class: `msg ${kind}` }, text) : null);
}

// sayNext shows a message on the page a navigation is about to show.
let pending = null;
function sayNext(text, kind = "ok") {
  pending = [text, kind];
}

function errorBox(err) {
  return h("p", { class: "msg error", role: "alert" }, err instanceof APIError ? `${err.message} (${err.code || err.status})` : String(err));
}

// The catalog, roles and orgs, read once per visit to a form.
async function catalog() {
  const [eps, roles] = await Promise.all([get("v1/endpoints"), get("v1/roles?limit=1000")]);
  return { endpoints: eps.body.endpoints, scopes: eps.body.scopes, roles: roles.body.roles };
}

// ---- routing ----

const routes = [
  [/^#?\/?$/, viewOrgs],
  [/^#\/roles$/, viewRoles],
  [/^#\/endpoints$/, viewEndpoints],
  [/^#\/(org|product)\/([^/]+)$/, (m) => viewTeam(m[1], dec(m[2]))],
  [/^#\/(org|product)\/([^/]+)\/new$/, (m) => viewForm(m[1], dec(m[2]), null)],
  [/^#\/(org|product)\/([^/]+)\/users\/([^/]+)$/, (m) => viewUser(m[1], dec(m[2]), dec(m[3]))],
  [/^#\/(org|product)\/([^/]+)\/users\/([^/]+)\/edit$/, (m) => viewForm(m[1], dec(m[2]), dec(m[3]))],
];

function dec(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

const enc = encodeURIComponent;
const teamHash = (kind, name) => `#/${kind}/${enc(name)}`;
const userHash = (kind, name, u) => `${teamHash(kind, name)}/users/${enc(u)}`;

async function route() {
  if (pending) {
    say(...pending);
    pending = null;
  } else {
    say("");
  }
  for (const [re, view] of routes) {
    const m = location.hash.match(re);
    if (m) {
      try {
        await view(m);
      } catch (err) {
        replace(main, h("h1", {}, "Something went wrong"), errorBox(err));
      }
      const heading = main.querySelector("h1");
      if (heading) {
        heading.setAttribute("tabindex", "-1");
        heading.focus();
        document.title = `${heading.textContent} · API users`;
      }
      return;
    }
  }
  replace(main, h("h1", {}, "Not found"), h("p", {}, "No such page. "), h("a", { href: "#/" }, "Back to the orgs"));
}

window.addEventListener("hashchange", route);

// ---- orgs and products ----

async function countOf(kind, name) {
  const r = await get(`${teamPath(kind, name)}?limit=100`);
  return r.body.next ? "100+" : String(r.body.team.length);
}

async function viewOrgs() {
  const { body } = await get("v1/orgs?limit=1000");
  const rows = [];
  for (const o of body.orgs) {
    rows.push({ kind: "org", name: o.id, label: o.slug ? `${o.id} (${o.slug})` : o.id, org: o.id, source: o.source });
    for (const p of o.products) {
      rows.push({ kind: "product", name: String(p.id), label: p.slug ? `${p.id} (${p.slug})` : String(p.id), org: o.id, source: p.source });
    }
  }
  const counts = await Promise.all(rows.map((r) => countOf(r.kind, r.name)));
  replace(
    main,
    h("h1", {}, "Orgs and products"),
    h("p", { class: "lead" }, "Each org has its org-level API users, and each of its products has its own team. Open a team to see and manage its users."),
    h(
      "table",
      { class: "list" },
      h("caption", { class: "sr-only" }, "Orgs and products, with their API users"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Team"), h("th", { scope: "col" }, "Kind"), h("th", { scope: "col" }, "Org"), h("th", { scope: "col" }, "API users"), h("th", { scope: "col" }, "Defined in"))),
      h(
        "tbody",
        {},
        rows.map((r, i) =>
          h(
            "tr",
            { class: r.kind },
            h("td", { "data-label": "Team" }, h("a", { href: teamHash(r.kind, r.name) }, r.label)),
            h("td", { "data-label": "Kind" }, r.kind),
            h("td", { "data-label": "Org" }, r.org),
            h("td", { "data-label": "API users" }, counts[i]),
            h("td", { "data-label": "Defined in" }, r.source),
          ),
        ),
      ),
    ),
  );
}

// ---- endpoints ----

async function viewEndpoints() {
  const { body } = await get("v1/endpoints");
  replace(
    main,
    h("h1", {}, "Endpoint catalog"),
    h("p", { class: "lead" }, "The gateway allows only these routes, each to users with its scope. The catalog is defined in the Caddyfile."),
    h(
      "table",
      { class: "list" },
      h("thead", {}, h("tr", {}, ["Name", "Methods", "Path template", "Scope"].map((c) => h("th", { scope: "col" }, c)))),
      h(
        "tbody",
        {},
        body.endpoints.map((e) =>
          h("tr", {}, h("td", { "data-label": "Name" }, e.name), h("td", { "data-label": "Methods" }, e.methods.join(", ")), h("td", { "data-label": "Path template" }, h("code", {}, e.path)), h("td", { "data-label": "Scope" }, h("code", {}, e.scope))),
        ),
      ),
    ),
  );
}

// ---- roles ----

async function viewRoles() {
  const [{ body }, eps] = await Promise.all([get("v1/roles?limit=1000"), get("v1/endpoints")]);
  const list = h(
    "table",
    { class: "list" },
    h("thead", {}, h("tr", {}, ["Role", "Description", "Scopes", "Defined in", "Actions"].map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      {},
      body.roles.map((r) =>
        h(
          "tr",
          {},
          h("td", { "data-label": "Role" }, r.name),
          h("td", { "data-label": "Description" }, r.description || "—"),
          h("td", { "data-label": "Scopes" }, r.scopes.join(", ")),
          h("td", { "data-label": "Defined in" }, r.source),
          h(
            "td",
            { "data-label": "Actions" },
            r.source === "store"
              ? [
                  h("button", { type: "button", class: "small", "aria-label": `Edit role ${r.name}`, onclick: () => fillRole(r) }, "Edit"),
                  " ",
                  h("button", { type: "button", class: "small danger", "aria-label": `Delete role ${r.name}`, onclick: () => deleteRole(r.name) }, "Delete"),
                ]
              : "read-only",
          ),
        ),
      ),
    ),
  );
  const name = h("input", { type: "text", name: "name", required: true, pattern: "[a-z][a-z0-9_-]{0,63}", autocomplete: "off" });
  const desc = h("textarea", { name: "description", rows: 2 });
  const scopeBoxes = scopePicker(eps.body.scopes, []);
  const form = h(
    "form",
    { class: "card", onsubmit: (e) => saveRole(e, name.value, desc.value, scopeBoxes.selected()) },
    h("h2", {}, "Create or replace a role"),
    field("Name", name, "Lowercase letters, digits, - and _. Saving an existing name replaces that role."),
    field("Description", desc),
    scopeBoxes.el,
    h("button", { type: "submit" }, "Save role"),
  );
  function fillRole(r) {
    name.value = r.name;
    desc.value = r.description;
    scopeBoxes.set(r.scopes);
    name.focus();
  }
  replace(main, h("h1", {}, "Roles"), h("p", { class: "lead" }, "A role is a named set of scopes; a user's rights are its own scopes plus its roles'. Editing a role changes the rights of every user that has it."), list, form);
}

async function saveRole(e, name, description, scopes) {
  e.preventDefault();
  try {
    await call("PUT", `v1/roles/${enc(name)}`, { description, scopes });
    await viewRoles();
    say(`Role ${name} saved.`, "ok");
  } catch (err) {
    say(err.message, "error");
  }
}

async function deleteRole(name) {
  if (!(await confirmDialog(`Delete role ${name}?`, "Users that have it lose its scopes; the role is refused while any user has it.", "Delete role"))) return;
  try {
    await call("DELETE", `v1/roles/${enc(name)}`);
    await viewRoles();
    say(`Role ${name} deleted.`, "ok");
  } catch (err) {
    say(`Role ${name} was not deleted: ${err.message}`, "error");
  }
}

// scopePicker is a set of checkboxes, grouped by resource.
function scopePicker(scopes, chosen) {
  const groups = new Map();
  for (const s of scopes) {
    const resource = s.split(":")[0].split(".")[0];
    if (!groups.has(resource)) groups.set(resource, []);
    groups.get(resource).push(s);
  }
  const boxes = [];
  const el = h(
    "fieldset",
    { class: "scopes" },
    h("legend", {}, "Scopes"),
    [...groups].map(([resource, list]) =>
      h(
        "fieldset",
        { class: "group" },
        h("legend", {}, resource),
        list.map((s) => {
          const id = uid("scope");
          const box = h("input", { type: "checkbox", id, value: s, checked: chosen.includes(s) });
          boxes.push(box);
          return h("div", { class: "check" }, box, h("label", { for: id }, s));
        }),
      ),
    ),
  );
  return {
    el,
    selected: () => boxes.filter((b) => b.checked).map((b) => b.value),
    set: (list) => boxes.forEach((b) => (b.checked = list.includes(b.value))),
  };
}

// ---- a team ----

async function viewTeam(kind, name) {
  const q = h("input", { type: "search", name: "q", autocomplete: "off" });
  const state = h("select", { name: "state" }, [["", "any state"], ["active", "active"], ["retired", "retired"], ["expired", "expired"], ["idle_expired", "idle-expired"]].map(([v, l]) => h("option", { value: v }, l)));
  const sort = h("select", { name: "sort" }, [["username", "username"], ["name", "friendly name"], ["-created", "newest first"], ["created", "oldest first"], ["-last_used", "last used"]].map(([v, l]) => h("option", { value: v }, l)));
  const tbody = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const summary = h("p", { class: "hint", "aria-live": "polite" });
  let cursor = null;
  let shown = 0;

  async function load(reset) {
    const params = new URLSearchParams({ limit: "50", sort: sort.value });
    if (q.value) params.set("q", q.value);
    if (state.value) params.set("state", state.value);
    if (!reset && cursor) params.set("cursor", cursor);
    try {
      const { body } = await get(`${teamPath(kind, name)}?${params}`);
      if (reset) {
        tbody.replaceChildren();
        shown = 0;
      }
      for (const u of body.team) tbody.appendChild(userRow(kind, name, u));
      shown += body.team.length;
      cursor = body.next;
      more.hidden = !cursor;
      summary.textContent = shown === 0 ? "No API users match." : `${shown} shown${cursor ? ", more to load" : ""}.`;
    } catch (err) {
      say(err.message, "error");
    }
  }
  more.addEventListener("click", () => load(false));
  const form = h(
    "form",
    {
      class: "filters",
      role: "search",
      onsubmit: (e) => {
        e.preventDefault();
        load(true);
      },
    },
    field("Search username or name", q),
    field("State", state),
    field("Sort by", sort),
    h("button", { type: "submit" }, "Apply"),
  );
  state.addEventListener("change", () => load(true));
  sort.addEventListener("change", () => load(true));
  const label = kind === "org" ? `Org ${name}` : `Product ${name}`;
  replace(
    main,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Orgs"), " / ", label),
    h("div", { class: "titlebar" }, h("h1", {}, `${label}: API users`), h("a", { class: "button", href: `${teamHash(kind, name)}/new` }, "Add API user")),
    form,
    summary,
    h("table", { class: "list" }, h("thead", {}, h("tr", {}, ["Username", "Friendly name", "State", "Scopes", "Last used", "Created"].map((c) => h("th", { scope: "col" }, c)))), tbody),
    more,
  );
  await load(true);
}

// stateOf is the user's state as the gateway sees it, for display.
function stateOf(u) {
  if (u.retired) return "retired";
  if (u.expires_at && new Date(u.expires_at) <= new Date()) return "expired";
  if (u.idle_timeout) {
    const last = Math.max(Date.parse(u.last_used_at || 0) || 0, Date.parse(u.created_at) || 0);
    if (last + durationMs(u.idle_timeout) <= Date.now()) return "idle-expired";
  }
  return "active";
}

// durationMs reads a Go duration such as 720h0m0s.
function durationMs(d) {
  const units = { h: 3600e3, m: 60e3, s: 1e3, ms: 1, "µs": 1e-3, us: 1e-3, ns: 1e-6 };
  let total = 0;
  for (const [, n, u] of d.matchAll(/([\d.]+)(ms|µs|us|ns|h|m|s)/g)) total += parseFloat(n) * units[u];
  return total;
}

function userRow(kind, name, u) {
  const st = stateOf(u);
  return h(
    "tr",
    {},
    h("td", { "data-label": "Username" }, h("a", { href: userHash(kind, name, u.username) }, u.username)),
    h("td", { "data-label": "Friendly name" }, u.friendly_name || "—"),
    h("td", { "data-label": "State" }, h("span", { class: `state ${st}` }, st)),
    h("td", { "data-label": "Scopes" }, [...u.scopes, ...u.roles.map((r) => `role ${r}`)].join(", ") || "—"),
    h("td", { "data-label": "Last used" }, when(u.last_used_at)),
    h("td", { "data-label": "Created" }, when(u.created_at)),
  );
}

// ---- a user ----

// samplePath is a gateway path to try a team's user with: a product's
// devices, or an org's events (the example's catalog has both).
function samplePath(kind, team) {
  return kind === "product" ? `/v1/products/${enc(team)}/devices` : `/v1/orgs/${enc(team)}/events`;
}

async function viewUser(kind, team, username) {
  const path = userPath(kind, team, username);
  let { body, etag } = await get(path);
  const u = body.user;
  const st = stateOf(u);
  const banner = h("div", { class: "banner", "aria-live": "assertive" });

  // change sends a change with the ETag the page loaded; on 412 it says
  // so and offers a reload instead of overwriting.
  async function change(method, suffix, payload, done) {
    try {
      const r = await call(method, path + suffix, payload, etag);
      if (r.etag) etag = r.etag;
      if (done) await done(r.body);
      return r.body;
    } catch (err) {
      if (err.status === 412) {
        replace(
          banner,
          h(
            "div",
            { class: "msg error", role: "alert" },
            h("p", {}, "Someone else changed this API user since you opened this page. Nothing was saved."),
            h("button", { type: "button", onclick: () => route() }, "Reload the user"),
          ),
        );
        banner.querySelector("button").focus();
      } else {
        say(err.message, "error");
      }
      return null;
    }
  }

  const credentialsFor = (title, values) => showCredentials(title, values, username, samplePath(kind, team));

  const actions = h(
    "div",
    { class: "actions", role: "group", "aria-label": "Actions" },
    h("a", { class: "button", href: `${userHash(kind, team, username)}/edit` }, "Edit"),
    h(
      "button",
      {
        type: "button",
        onclick: async () => {
          if (!(await confirmDialog("Rotate the access token?", "A new token is issued and the current one stops working at once.", "Rotate token"))) return;
          const r = await change("POST", "/token", {});
          if (r) {
            await credentialsFor("New access token", { token: r.token });
            route();
          }
        },
      },
      "Rotate token",
    ),
    h(
      "button",
      {
        type: "button",
        onclick: async () => {
          if (!(await confirmDialog("Regenerate the Secret?", "Every application using this user's keys needs the new Secret: the old one stops working at once. Rotating a Key is less disruptive.", "Regenerate Secret"))) return;
          const r = await change("POST", "/secret", {});
          if (r) {
            await credentialsFor("New Secret", { secret: r.secret });
            route();
          }
        },
      },
      "Regenerate Secret",
    ),
    h(
      "button",
      {
        type: "button",
        onclick: async () => {
          const r = await change("PUT", "", { retired: !u.retired });
          if (r) {
            if (r.user.tokens) await credentialsFor("New access token", { token: r.user.tokens[0].token });
            await route();
            say(u.retired ? `${username} is active again.` : `${username} is retired.`, "ok");
          }
        },
      },
      u.retired ? "Bring back" : "Retire",
    ),
    h(
      "button",
      {
        type: "button",
        class: "danger",
        onclick: async () => {
          if (!(await confirmDialog(`Delete ${username}?`, "The user and all its credentials are deleted; they stop working at once. Type the username to confirm.", "Delete user", username))) return;
          const r = await change("DELETE", "", undefined);
          if (r) {
            sayNext(`${username} was deleted.`);
            location.hash = teamHash(kind, team);
          }
        },
      },
      "Delete",
    ),
  );

  const dl = (pairs) => h("dl", { class: "fields" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  const list = (xs, none) => (xs && xs.length ? xs.join(", ") : none);
  const constraints = Object.entries(u.resource_constraints || {}).map(([k, vs]) => `${k} = ${vs.join(", ")}`);
  const details = dl([
    ["Username", u.username],
    ["Friendly name", u.friendly_name || "—"],
    ["Description", u.description || "—"],
    ["Org", u.org],
    ["Product", u.product ? String(u.product) : "— (org-level)"],
    ["State", h("span", { class: `state ${st}` }, st)],
    ["Scopes", list(u.scopes, "none")],
    ["Roles", list(u.roles, "none")],
    ["Allowed endpoints", list(u.allowed_endpoints, "all")],
    ["Proxied users", u.allow_proxied_users ? list(u.allowed_proxied_users, "any valid user ID") : "not allowed"],
    ["Resource constraints", list(constraints, "none")],
    ["Expires", u.expires_at ? when(u.expires_at) : "never"],
    ["Idle timeout", u.idle_timeout || "none"],
    ["Rate limit", u.rate_limit ? `${u.rate_limit.requests} per ${u.rate_limit.window}` : "the gateway's"],
    ["Quota", u.quota ? `${u.quota.requests} per ${u.quota.period} (UTC)` : "the gateway's"],
    ["Allowed IPs", list(u.allowed_ips || [], "anywhere")],
    ["Access token ID", h("code", {}, u.token_id || "—")],
    ["Created", when(u.created_at)],
    ["Updated", when(u.updated_at)],
    ["Last used", when(u.last_used_at)],
  ]);

  // Keys, and adding one with an overlap window.
  const prevExpire = h("input", { type: "datetime-local", name: "previous_keys_expire_at" });
  const keyRows = u.keys.map((k) =>
    h(
      "tr",
      {},
      h("td", { "data-label": "Key ID" }, h("code", {}, k.id)),
      h("td", { "data-label": "Created" }, when(k.created_at)),
      h("td", { "data-label": "Expires" }, k.expires_at ? when(k.expires_at) : "never"),
      h(
        "td",
        { "data-label": "Actions" },
        h(
          "button",
          {
            type: "button",
            class: "small danger",
            "aria-label": `Delete key ${k.id}`,
            onclick: async () => {
              if (!(await confirmDialog(`Delete key ${k.id}?`, "Applications using this key stop working at once.", "Delete key"))) return;
              if (await change("DELETE", `/keys/${enc(k.id)}`)) {
                await route();
                say(`Key ${k.id} deleted.`, "ok");
              }
            },
          },
          "Delete",
        ),
      ),
    ),
  );
  const keys = h(
    "section",
    { class: "card", "aria-labelledby": "keys-h" },
    h("h2", { id: "keys-h" }, "Keys"),
    h("p", { class: "hint" }, "Basic authentication needs the Secret and one current Key. Add Key B, move applications to it, then delete Key A: rotation without downtime."),
    u.keys.length ? h("table", { class: "list" }, h("thead", {}, h("tr", {}, ["Key ID", "Created", "Expires", "Actions"].map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, keyRows)) : h("p", {}, "No keys: Basic authentication is locked out."),
    h(
      "form",
      {
        class: "inline",
        onsubmit: async (e) => {
          e.preventDefault();
          const spec = {};
          if (prevExpire.value) spec.previous_keys_expire_at = new Date(prevExpire.value).toISOString().replace(/\.\d+Z$/, "Z");
          const r = await change("POST", "/keys", spec);
          if (r) {
            await credentialsFor("New Key", { key: r.key.value, keyID: r.key.id });
            route();
          }
        },
      },
      field("Previous keys expire at (optional)", prevExpire, "Your local time. Leave empty to keep the other keys until you delete them."),
      h("button", { type: "submit" }, "Add key"),
    ),
  );

  // Try a request.
  const method = h("select", { name: "method" }, ["GET", "POST", "PUT", "DELETE", "PATCH"].map((m) => h("option", { value: m }, m)));
  const reqPath = h("input", { type: "text", name: "path", value: samplePath(kind, team), autocomplete: "off", spellcheck: "false" });
  const proxied = h("input", { type: "text", name: "proxied_user", autocomplete: "off" });
  const verdict = h("div", { class: "verdict", "aria-live": "polite" });
  const tryForm = h(
    "form",
    {
      class: "card",
      "aria-labelledby": "try-h",
      onsubmit: async (e) => {
        e.preventDefault();
        const spec = { method: method.value, path: reqPath.value };
        if (proxied.value) spec.proxied_user = proxied.value;
        try {
          const r = await call("POST", `${path}/decide`, spec);
          const d = r.body.decision;
          replace(
            verdict,
            h("p", { class: `msg ${d.allowed ? "ok" : "error"}`, "data-reason": d.reason }, `${d.allowed ? "Allowed" : "Refused"}: ${d.status} ${d.reason}`),
            dl([
              ["Why", d.description],
              ["Step", `${d.step} ${d.step_name}`],
              ["Endpoint", d.endpoint ? `${d.endpoint.name}: ${d.endpoint.methods.join(", ")} ${d.endpoint.path} (scope ${d.endpoint.scope})` : "none matched"],
              ["Route variables", Object.entries(d.vars).map(([k, v]) => `${k} = ${v}`).join(", ") || "—"],
              ["Effective scopes", d.effective_scopes.join(", ") || "none"],
              ["Not checked", d.not_checked],
            ]),
          );
        } catch (err) {
          replace(verdict, errorBox(err));
        }
      },
    },
    h("h2", { id: "try-h" }, "Try a request"),
    h("p", { class: "hint" }, "What the gateway would decide for this user, and why. Nothing is sent to the upstream."),
    h("div", { class: "row" }, field("Method", method), field("Path", reqPath), field("Proxied user (optional)", proxied)),
    h("button", { type: "submit" }, "Decide"),
    verdict,
  );

  const history = h("section", { class: "card", "aria-labelledby": "hist-h" }, h("h2", { id: "hist-h" }, "Change history"), h("p", {}, "Loading…"));
  replace(
    main,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Orgs"), " / ", h("a", { href: teamHash(kind, team) }, `${kind === "org" ? "Org" : "Product"} ${team}`), " / ", username),
    h("h1", {}, u.friendly_name ? `${u.friendly_name} (${u.username})` : u.username),
    banner,
    actions,
    h("section", { class: "card", "aria-label": "Fields" }, details),
    usageSection(path),
    keys,
    tryForm,
    history,
  );
  loadHistory(path, history);
}

// summarise names the fields a history entry changed.
function summarise(before, after) {
  if (!before) return "created";
  if (!after) return "deleted";
  const changed = [];
  for (const k of Object.keys(after)) {
    if (k === "updated_at" || k === "last_used_at") continue;
    if (JSON.stringify(before[k]) !== JSON.stringify(after[k])) changed.push(k);
  }
  return changed.length ? `changed ${changed.join(", ")}` : "no field changed";
}

async function loadHistory(path, section, cursor) {
  try {
    const { body } = await get(`${path}/history?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    if (!cursor) replace(section, h("h2", { id: "hist-h" }, "Change history"));
    let ol = section.querySelector("ol");
    if (!ol) {
      ol = h("ol", { class: "history" });
      section.appendChild(ol);
    }
    for (const e of body.history) {
      ol.appendChild(h("li", {}, h("time", { datetime: e.at }, when(e.at)), " ", h("strong", {}, e.action.replaceAll("_", " ")), ` by ${e.by}: ${summarise(e.before, e.after)}${e.detail ? ` (${e.detail})` : ""}`));
    }
    if (!body.history.length && !cursor) section.appendChild(h("p", {}, "No recorded changes."));
    section.querySelector("button.more")?.remove();
    if (body.next) section.appendChild(h("button", { type: "button", class: "secondary more", onclick: () => loadHistory(path, section, body.next) }, "Older changes"));
  } catch (err) {
    replace(section, h("h2", { id: "hist-h" }, "Change history"), errorBox(err));
  }
}

// ---- create and edit ----

async function viewForm(kind, team, username) {
  const cat = await catalog();
  let user = null;
  let etag = null;
  if (username) {
    const r = await get(userPath(kind, team, username));
    user = r.body.user;
    etag = r.etag;
  }
  const v = user || { friendly_name: "", description: "", scopes: [], roles: [], allowed_endpoints: [], allow_proxied_users: false, allowed_proxied_users: [], resource_constraints: {}, retired: false, expires_at: null, idle_timeout: "", rate_limit: null, quota: null, allowed_ips: [] };

  const uname = h("input", { type: "text", name: "username", autocomplete: "off", spellcheck: "false", pattern: "[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}" });
  const fname = h("input", { type: "text", name: "friendly_name", value: v.friendly_name, maxlength: 200 });
  const desc = h("textarea", { name: "description", rows: 3 });
  desc.value = v.description;
  // Scopes: those the catalog requires, and those the roles grant.
  const scopes = scopePicker([...new Set([...cat.scopes, ...cat.roles.flatMap((r) => r.scopes)])].sort(), v.scopes);
  const roleBoxes = cat.roles.map((r) => {
    const id = uid("role");
    return { name: r.name, box: h("input", { type: "checkbox", id, value: r.name, checked: v.roles.includes(r.name) }), label: h("label", { for: id }, `${r.name}: ${r.scopes.join(", ")}`) };
  });
  const picker = endpointPicker(cat.endpoints, v.allowed_endpoints);
  const allowProxied = h("input", { type: "checkbox", name: "allow_proxied_users", checked: v.allow_proxied_users });
  const proxiedList = h("input", { type: "text", name: "allowed_proxied_users", value: v.allowed_proxied_users.join(", "), autocomplete: "off" });
  const constraints = h("textarea", { name: "resource_constraints", rows: 2, spellcheck: "false" });
  constraints.value = Object.entries(v.resource_constraints || {}).map(([k, vs]) => `${k}=${vs.join(",")}`).join("\n");
  const retired = h("input", { type: "checkbox", name: "retired", checked: v.retired });
  const expires = h("input", { type: "datetime-local", name: "expires_at", value: v.expires_at ? toLocalInput(v.expires_at) : "" });
  const idle = h("input", { type: "text", name: "idle_timeout", value: v.idle_timeout, placeholder: "720h", autocomplete: "off" });
  const rlReq = h("input", { type: "number", name: "rate_limit_requests", min: 0, value: v.rate_limit ? v.rate_limit.requests : "" });
  const rlWin = h("input", { type: "text", name: "rate_limit_window", value: v.rate_limit ? v.rate_limit.window : "", placeholder: "1m", autocomplete: "off" });
  const qReq = h("input", { type: "number", name: "quota_requests", min: 0, value: v.quota ? v.quota.requests : "" });
  const qPeriod = h("select", { name: "quota_period" }, h("option", { value: "day" }, "per day (UTC)"), h("option", { value: "month" }, "per month (UTC)"));
  qPeriod.value = v.quota ? v.quota.period : "month";
  const ips = h("input", { type: "text", name: "allowed_ips", value: (v.allowed_ips || []).join(", "), autocomplete: "off", spellcheck: "false", placeholder: "203.0.113.0/24, 2001:db8::/32" });
  const errors = h("div", { "aria-live": "assertive" });

  function spec() {
    const s = {
      friendly_name: fname.value,
      description: desc.value,
      scopes: scopes.selected(),
      roles: roleBoxes.filter((r) => r.box.checked).map((r) => r.name),
      allowed_endpoints: picker.selected(),
      allow_proxied_users: allowProxied.checked,
      allowed_proxied_users: proxiedList.value.split(",").map((x) => x.trim()).filter(Boolean),
      resource_constraints: {},
      retired: retired.checked,
      expires_at: expires.value ? new Date(expires.value).toISOString().replace(/\.\d+Z$/, "Z") : "",
      idle_timeout: idle.value.trim(),
      rate_limit: rlReq.value && Number(rlReq.value) > 0 ? { requests: Number(rlReq.value), window: rlWin.value.trim() } : { requests: 0 },
      quota: qReq.value && Number(qReq.value) > 0 ? { requests: Number(qReq.value), period: qPeriod.value } : { requests: 0 },
      allowed_ips: ips.value.split(",").map((x) => x.trim()).filter(Boolean),
    };
    for (const line of constraints.value.split("\n")) {
      if (!line.trim()) continue;
      const [k, vals = ""] = line.split("=", 2);
      s.resource_constraints[k.trim()] = vals.split(",").map((x) => x.trim()).filter(Boolean);
    }
    if (!username && uname.value) s.username = uname.value;
    return s;
  }

  async function submit(e) {
    e.preventDefault();
    const s = spec();
    try {
      if (!username) {
        const r = await call("POST", teamPath(kind, team), s);
        const c = r.body.created;
        await showCredentials("API user created", { token: c.tokens[0].token, secret: c.secret, key: c.keys[0].value, keyID: c.keys[0].id }, c.username, samplePath(kind, team));
        sayNext(`API user ${c.username} created.`);
        location.hash = userHash(kind, team, c.username);
        return;
      }
      if (replacesToken(user, s) && !(await confirmDialog("Saving replaces the access token", "This change alters what the user may do, so the current access token stops working at once and a new one is shown once. Keys and the Secret keep working.", "Save and replace the token"))) return;
      const r = await call("PUT", userPath(kind, team, username), s, etag);
      if (r.body.user.tokens) {
        await showCredentials("New access token", { token: r.body.user.tokens[0].token }, username, samplePath(kind, team));
      }
      sayNext("Saved.");
      location.hash = userHash(kind, team, username);
    } catch (err) {
      if (err.status === 412) {
        replace(errors, h("div", { class: "msg error", role: "alert" }, h("p", {}, "Someone else changed this API user since you opened this form. Nothing was saved."), h("button", { type: "button", onclick: () => route() }, "Reload the user (your edits are lost)")));
      } else {
        replace(errors, errorBox(err));
      }
      errors.querySelector("[role=alert]")?.focus?.();
    }
  }

  const title = username ? `Edit ${username}` : `Add an API user to ${kind} ${team}`;
  replace(
    main,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Orgs"), " / ", h("a", { href: teamHash(kind, team) }, `${kind === "org" ? "Org" : "Product"} ${team}`), username ? [" / ", h("a", { href: userHash(kind, team, username) }, username)] : null),
    h("h1", {}, title),
    h(
      "form",
      { class: "card userform", onsubmit: submit, novalidate: true },
      errors,
      username ? null : field("Username (optional)", uname, "Letters, digits and . _ @ + -; leave empty to have one generated. It cannot change later."),
      field("Friendly name", fname),
      field("Description", desc),
      scopes.el,
      h("fieldset", { class: "roles" }, h("legend", {}, "Roles"), roleBoxes.length ? roleBoxes.map((r) => h("div", { class: "check" }, r.box, r.label)) : h("p", {}, "No roles defined.")),
      picker.el,
      h("fieldset", {}, h("legend", {}, "Proxied users"), h("div", { class: "check" }, allowProxied, h("label", { for: (allowProxied.id = uid("ap")) }, "Allow proxied users")), field("Allowed proxied user IDs", proxiedList, "Comma-separated. Empty: any valid user ID.")),
      field("Resource constraints", constraints, "One per line: variable=value,value, such as device=0a1b2c,3d4e5f. The user may only reach those values."),
      h("fieldset", {}, h("legend", {}, "Life"), h("div", { class: "check" }, retired, h("label", { for: (retired.id = uid("ret")) }, "Retired")), field("Expires at (optional)", expires, "Your local time."), field("Idle timeout (optional)", idle, "A duration such as 720h: the user expires after this long unused.")),
      h("fieldset", {}, h("legend", {}, "Rate limit"), h("div", { class: "row" }, field("Requests", rlReq, "0 or empty: the gateway's limit."), field("Per window", rlWin, "Such as 1m."))),
      h("fieldset", {}, h("legend", {}, "Quota"), h("div", { class: "row" }, field("Allowed requests", qReq, "0 or empty: the gateway's quota."), field("Period", qPeriod, "Calendar periods; over it: 429 until the reset."))),
      field("Allowed IPs (optional)", ips, "Comma-separated networks or addresses the user may be used from. Empty: anywhere. Changing it replaces the access token."),
      h("div", { class: "actions" }, h("button", { type: "submit" }, username ? "Save changes" : "Create API user"), h("a", { class: "button secondary", href: username ? userHash(kind, team, username) : teamHash(kind, team) }, "Cancel")),
    ),
  );
}

function toLocalInput(t) {
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// canonIP writes an address as the server keeps it: a single address as a
// /32 or /128, so that an unchanged list is not taken for a change.
function canonIP(x) {
  return x.includes("/") ? x : `${x}/${x.includes(":") ? 128 : 32}`;
}

// replacesToken mirrors the server's rule (users.go, tokenMustChange), to
// warn before saving; the server decides.
function replacesToken(before, s) {
  const same = (a, b) => JSON.stringify([...new Set(a)].sort()) === JSON.stringify([...new Set(b)].sort());
  const rc = (m) => JSON.stringify(Object.keys(m).sort().map((k) => [k, [...new Set(m[k])].sort()]));
  if (!same(before.scopes, s.scopes) || !same(before.roles, s.roles) || !same(before.allowed_endpoints, s.allowed_endpoints) || before.allow_proxied_users !== s.allow_proxied_users || !same(before.allowed_proxied_users, s.allowed_proxied_users) || rc(before.resource_constraints || {}) !== rc(s.resource_constraints) || !same(before.allowed_ips || [], (s.allowed_ips || []).map(canonIP))) return true;
  if (before.retired && !s.retired) return true;
  if (before.expires_at && (!s.expires_at || Date.parse(s.expires_at) > Date.parse(before.expires_at))) return true;
  if (before.idle_timeout && (!s.idle_timeout || durationMs(s.idle_timeout) > durationMs(before.idle_timeout))) return true;
  return false;
}

// endpointPicker is Momentus's Available / Selected lists: search the
// available endpoints, move them across with the buttons (or by pressing
// Enter in a list). Nothing selected means every endpoint is allowed.
function endpointPicker(endpoints, chosen) {
  const search = h("input", { type: "search", autocomplete: "off" });
  const size = Math.min(Math.max(endpoints.length, 4), 12);
  const avail = h("select", { multiple: true, size, class: "picker" });
  const sel = h("select", { multiple: true, size, class: "picker" });
  let selected = new Set(chosen);
  const label = (e) => `${e.name} — ${e.methods.join(",")} ${e.path}`;
  function render() {
    const f = search.value.toLowerCase();
    avail.replaceChildren(...endpoints.filter((e) => !selected.has(e.name) && label(e).toLowerCase().includes(f)).map((e) => h("option", { value: e.name }, label(e))));
    sel.replaceChildren(...endpoints.filter((e) => selected.has(e.name)).map((e) => h("option", { value: e.name }, label(e))));
    note.textContent = selected.size ? `${selected.size} selected: only these are allowed.` : "None selected: every endpoint is allowed (subject to scopes).";
  }
  const move = (from, add) => () => {
    for (const o of [...from.selectedOptions]) add ? selected.add(o.value) : selected.delete(o.value);
    render();
  };
  const note = h("p", { class: "hint", "aria-live": "polite" });
  search.addEventListener("input", render);
  avail.addEventListener("keydown", (e) => e.key === "Enter" && (e.preventDefault(), move(avail, true)()));
  sel.addEventListener("keydown", (e) => e.key === "Enter" && (e.preventDefault(), move(sel, false)()));
  avail.addEventListener("dblclick", move(avail, true));
  sel.addEventListener("dblclick", move(sel, false));
  const el = h(
    "fieldset",
    { class: "endpoints" },
    h("legend", {}, "Allowed endpoints"),
    field("Search endpoints", search),
    h(
      "div",
      { class: "picker-row" },
      field("Available", avail),
      h("div", { class: "picker-buttons" }, h("button", { type: "button", onclick: move(avail, true) }, "Add →"), h("button", { type: "button", onclick: move(sel, false) }, "← Remove")),
      field("Selected", sel),
    ),
    note,
  );
  render();
  return { el, selected: () => endpoints.filter((e) => selected.has(e.name)).map((e) => e.name) };
}

route();
