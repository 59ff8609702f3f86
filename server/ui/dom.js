// Small DOM helpers shared by the views.

// `el("td", {class: "x"}, "text", child)`: an element with attributes and children.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    return value.toFixed(digits);
  }
  if (Array.isArray(value)) return value.map((v) => fmt(v, 2)).join(", ");
  return String(value);
}

export function engineering(value) {
  if (value === null || value === undefined) return "";
  if (Math.abs(value) < 1000) return fmt(value, 1);
  const units = ["k", "M", "G", "T", "P", "E"];
  let i = -1;
  while (Math.abs(value) >= 1000 && i < units.length - 1) {
    value /= 1000;
    i += 1;
  }
  return `${value.toFixed(1)}${units[i]}`;
}

// A horizontal bar chart of `table` (label -> weight), the `highlight` label marked.
export function renderBars(container, table, highlight = null) {
  const entries = Object.entries(table || {}).sort((a, b) => b[1] - a[1]);
  if (!entries.length) {
    container.replaceChildren(el("p", { class: "muted" }, "no votes"));
    return;
  }
  const top = Math.max(...entries.map((e) => e[1])) || 1;
  const rows = entries.map(([label, weight]) => {
    const bar = el("span", { class: "bar", style: `width: ${(100 * weight) / top}%` });
    const row = el(
      "div",
      { class: "bar-row" + (label === highlight ? " leader" : ""), "data-answer": label },
      el("span", { class: "bar-label", title: label }, label),
      el("span", { class: "bar-track" }, bar),
      el("span", { class: "bar-value" }, fmt(weight, 2)),
    );
    return row;
  });
  container.replaceChildren(...rows);
}
