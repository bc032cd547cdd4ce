// A user's usage on its page: the requests the gateway allowed and refused
// in the last 24 hours (by hour) and the last 30 days (by day), each as a
// bar chart drawn with inline SVG, from GET .../team/{username}/usage. The
// route answers every bucket of the range, zeros included, so one bar is
// drawn per bucket with no logic for gaps. Each chart is an image with a
// text summary for screen readers and a visible one for everyone, and
// each bar has a tooltip with its numbers.

import { h, replace } from "./dom.js";
import { get } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";

// s makes an SVG element: attributes as given, children appended.
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

// label names a bucket for people: "14:00" for an hour, "Mar 10" for a day,
// both in UTC, as the buckets are.
function label(start, granularity, long) {
  const d = new Date(start);
  if (granularity === "day") {
    return d.toLocaleDateString("en-GB", { timeZone: "UTC", day: "numeric", month: "short", ...(long ? { year: "numeric" } : {}) });
  }
  const hm = d.toLocaleTimeString("en-GB", { timeZone: "UTC", hour: "2-digit", minute: "2-digit" });
  return long ? `${d.toLocaleDateString("en-GB", { timeZone: "UTC", day: "numeric", month: "short" })} ${hm}` : hm;
}

// topReasons names the most frequent refusal reasons of a by_outcome.
function topReasons(byOutcome, n) {
  return Object.entries(byOutcome)
    .filter(([code]) => code !== "allowed")
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .slice(0, n)
    .map(([code, count]) => `${code.replaceAll("_", " ")} ${count}`)
    .join(", ");
}

const plural = (n, one, many) => `${n.toLocaleString("en")} ${n === 1 ? one : many}`;

// summaryOf says what a chart shows in one sentence.
function summaryOf(u, period) {
  const t = u.totals;
  if (t.allowed + t.refused === 0) return `No requests in the ${period}.`;
  let busiest = u.series[0];
  for (const b of u.series) if (b.allowed + b.refused > busiest.allowed + busiest.refused) busiest = b;
  const reasons = topReasons(t.by_outcome, 3);
  return (
    `${plural(t.allowed, "request", "requests")} allowed and ${plural(t.refused, "request", "requests")} refused in the ${period}` +
    (reasons ? ` (${reasons})` : "") +
    `; busiest ${u.granularity}: ${label(busiest.start, u.granularity, true)} UTC, ${plural(busiest.allowed + busiest.refused, "request", "requests")}.`
  );
}

// chart draws one report: a bar per bucket, allowed below and refused
// stacked on it, scaled to the busiest bucket.
function chart(u, title, period) {
  const n = u.series.length;
  const slot = 10;
  const height = 100;
  const peak = Math.max(0, ...u.series.map((b) => b.allowed + b.refused));
  const scale = (v) => (v / Math.max(1, peak)) * (height - 2);
  const titleID = `usage-${u.granularity}-title`;
  const descID = `usage-${u.granularity}-desc`;
  const summary = summaryOf(u, period);
  const svg = s(
    "svg",
    { class: "usage-chart", viewBox: `0 0 ${n * slot} ${height}`, preserveAspectRatio: "none", role: "img", "aria-labelledby": `${titleID} ${descID}`, "data-granularity": u.granularity },
    s("title", { id: titleID }, `${title}: requests allowed and refused`),
    s("desc", { id: descID }, summary),
    s("line", { class: "grid", x1: 0, x2: n * slot, y1: 1, y2: 1 }),
    s("line", { class: "grid", x1: 0, x2: n * slot, y1: height / 2, y2: height / 2 }),
  );
  u.series.forEach((b, i) => {
    const a = scale(b.allowed);
    const r = scale(b.refused);
    const x = i * slot + 1.5;
    const tip = `${label(b.start, u.granularity, true)} UTC: ${b.allowed} allowed, ${b.refused} refused${b.refused ? ` (${topReasons(b.by_outcome, 3)})` : ""}`;
    svg.append(
      s(
        "g",
        { class: "bar", "data-start": b.start, "data-allowed": b.allowed, "data-refused": b.refused },
        s("title", {}, tip),
        // A transparent column the full height, so a tooltip shows over
        // an empty or short bar too.
        s("rect", { class: "hit", x: i * slot, y: 0, width: slot, height }),
        s("rect", { class: "allowed", x, y: height - a, width: slot - 3, height: a }),
        s("rect", { class: "refused", x, y: height - a - r, width: slot - 3, height: r }),
      ),
    );
  });
  svg.append(s("line", { class: "axis", x1: 0, x2: n * slot, y1: height - 0.5, y2: height - 0.5 }));
  const first = u.series[0];
  const middle = u.series[Math.floor(n / 2)];
  const last = u.series[n - 1];
  return h(
    "figure",
    { class: "usage" },
    h("figcaption", {}, h("strong", {}, title), peak ? h("span", { class: "hint" }, ` peak ${peak.toLocaleString("en")} per ${u.granularity}`) : null),
    h("div", { class: "usage-plot" }, svg),
    h("div", { class: "usage-axis", "aria-hidden": "true" }, h("span", {}, label(first.start, u.granularity)), h("span", {}, label(middle.start, u.granularity)), h("span", {}, label(last.start, u.granularity))),
    h("p", { class: "usage-summary" }, summary),
  );
}

// usageSection returns the user page's usage card, filled in when both
// reports arrive.
export function usageSection(path) {
  const section = h("section", { class: "card", "aria-labelledby": "usage-h" }, h("h2", { id: "usage-h" }, "Usage"), h("p", {}, "Loading…"));
  load(path, section);
  return section;
}

async function load(path, section) {
  const heading = h("h2", { id: "usage-h" }, "Usage");
  try {
    const [hours, days] = await Promise.all([get(`${path}/usage?granularity=hour`), get(`${path}/usage?granularity=day`)]);
    replace(
      section,
      heading,
      h("p", { class: "hint" }, "Requests the gateway allowed and refused for this user, as every gateway node has reported them (UTC). Hover over a bar for its numbers."),
      h("ul", { class: "usage-legend", "aria-label": "Legend" }, h("li", {}, h("span", { class: "swatch allowed" }), "allowed"), h("li", {}, h("span", { class: "swatch refused" }), "refused")),
      h("div", { class: "usage-charts" }, chart(hours.body.usage, "Last 24 hours", "last 24 hours"), chart(days.body.usage, "Last 30 days", "last 30 days")),
    );
  } catch (err) {
    replace(section, heading, h("p", { class: "msg warn" }, err.status === 501 ? "This server's store keeps no usage counts." : `Usage could not be read: ${err.message}`));
  }
}
