// Building the page from data without innerHTML: every value goes in as text.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "testid") el.dataset.testid = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function short(id, length = 12) {
  if (!id) return "";
  const text = String(id);
  const bare = text.startsWith("sha256:") ? text.slice(7) : text;
  return bare.length > length ? bare.slice(0, length) : bare;
}

export function bytes(size) {
  if (size === undefined || size === null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(size);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value}\u00a0B` : `${value.toFixed(1)}\u00a0${units[unit]}`; // never wrapped
}

// A digest shown short, with the whole value on hover and for copying.
export function digest(value, testid) {
  return value ? h("code", { title: value, testid }, short(value)) : h("span", { class: "muted" }, "—");
}

const TONES = {
  identical: "ok", equivalent: "ok", success: "ok", reused: "muted",
  running: "warn", queued: "warn", scheduled: "warn", "not verified": "warn", restored: "warn",
  differs: "bad", missing: "bad", failed: "bad", blocking: "bad", refused: "bad",
};

export function badge(text, testid) {
  return h("span", { class: `badge ${TONES[text] || "muted"}`, testid }, text);
}

export function message(tone, testid, ...children) {
  return h("div", { class: `message ${tone}`, role: tone === "bad" ? "alert" : "status", testid }, ...children);
}
