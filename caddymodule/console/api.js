// The management API, from the page's own origin. Paths are relative to
// the page, so the console works wherever api_users_admin is mounted
// (under handle_path /admin/*, the page is /admin/ and the API is under
// it). Every change carries the entity tag the page read with If-Match, so
// a change someone else made in between is refused (412) instead of
// overwritten. Responses are never cached by the browser (the server says
// no-store) and nothing from them is written to any browser storage or log.

export class APIError extends Error {
  constructor(status, code, description) {
    super(description || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

// call sends a request and returns {body, etag}. body is sent as JSON.
export async function call(method, path, body, etag) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (etag) headers["If-Match"] = etag;
  const resp = await fetch(path, init);
  let data = null;
  try {
    data = await resp.json();
  } catch {
    throw new APIError(resp.status, "bad_response", `the server answered ${resp.status} without JSON`);
  }
  if (!resp.ok || !data || data.ok !== true) {
    throw new APIError(resp.status, data && data.error, data && data.error_description);
  }
  return { body: data, etag: resp.headers.get("ETag") };
}

export const get = (path) => call("GET", path);

// teamPath is the API path of a team: an org's or a product's.
export function teamPath(kind, name) {
  return `v1/${kind === "org" ? "orgs" : "products"}/${encodeURIComponent(name)}/team`;
}

export function userPath(kind, name, username) {
  return `${teamPath(kind, name)}/${encodeURIComponent(username)}`;
}
