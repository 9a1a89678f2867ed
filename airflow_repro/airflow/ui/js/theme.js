// Follow the Airflow UI's light/dark theme: it sets <html class="dark"> (next-themes) and resolves its
// Chakra colour tokens as custom properties on <html>; the page copies the ones run.css uses, and again
// whenever the user toggles the theme.

import { hostDocument } from "./host.js";

const TOKENS = [
  "bg-panel", "bg-subtle", "fg", "fg-muted", "border", "blue-solid", "blue-contrast",
  "fg-success", "fg-warning", "fg-error",
];

export function followHostTheme() {
  const doc = hostDocument();
  if (!doc) return; // opened on its own: prefers-color-scheme applies
  const sync = () => copyTheme(doc);
  sync();
  new MutationObserver(sync).observe(doc.documentElement, { attributes: true, attributeFilter: ["class", "style"] });
}

function copyTheme(doc) {
  const root = document.documentElement;
  const dark = doc.documentElement.classList.contains("dark");
  root.classList.toggle("dark", dark);
  root.classList.toggle("light", !dark);
  root.classList.add("themed");
  const styles = doc.defaultView.getComputedStyle(doc.documentElement);
  for (const token of TOKENS) {
    const name = `--chakra-colors-${token}`;
    const value = styles.getPropertyValue(name).trim();
    if (value) root.style.setProperty(name, value);
    else root.style.removeProperty(name);
  }
}
