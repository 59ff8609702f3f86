// A strategy's parameter form, built from the JSON Schema that /v1/strategies serves.
// Only fields the user changed are sent: the server fills in the defaults.

import { el } from "./dom.js";

function resolve(schema, root) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return { ...(root.$defs || {})[name], ...schema, $ref: undefined };
  }
  return schema || {};
}

// The non-null alternative of `anyOf: [X, {type: "null"}]`, and whether null is allowed.
function unwrap(schema, root) {
  const resolved = resolve(schema, root);
  const options = resolved.anyOf || resolved.oneOf;
  if (!options) return { schema: resolved, nullable: false };
  const others = options.filter((o) => o.type !== "null");
  const base = others.length === 1 ? resolve(others[0], root) : { type: "json" };
  const merged = { ...base, description: resolved.description, default: resolved.default };
  return { schema: merged, nullable: others.length < options.length };
}

function fieldId(path) {
  return `param-${path.join("-")}`;
}

function input(path, schema, required) {
  const id = fieldId(path);
  const name = path.join(".");
  const def = schema.default;
  let control;
  if (schema.enum) {
    control = el("select", { id });
    control.append(el("option", { value: "" }, `(default: ${JSON.stringify(def)})`));
    for (const value of schema.enum) control.append(el("option", { value: JSON.stringify(value) }, String(value)));
  } else if (schema.type === "boolean") {
    control = el("select", { id });
    control.append(el("option", { value: "" }, `(default: ${def})`));
    control.append(el("option", { value: "true" }, "true"));
    control.append(el("option", { value: "false" }, "false"));
  } else if (schema.type === "integer" || schema.type === "number") {
    control = el("input", { id, type: "number", step: schema.type === "integer" ? "1" : "any" });
    if (schema.minimum !== undefined) control.min = schema.minimum;
    if (schema.maximum !== undefined) control.max = schema.maximum;
    control.placeholder = def === undefined ? "required" : `default ${JSON.stringify(def)}`;
  } else {
    control = el("input", { id, type: "text" });
    const json = schema.type !== "string";
    control.dataset.json = json ? "1" : "";
    control.placeholder = def === undefined ? "required" : `default ${JSON.stringify(def)}`;
    if (json) control.title = "JSON";
  }
  control.dataset.param = name;
  control.dataset.kind = schema.type || (schema.enum ? "enum" : "json");
  if (required) control.required = true;
  const label = el("label", { for: id }, name + (required ? " *" : ""));
  const help = schema.description ? el("span", { class: "muted small" }, schema.description) : null;
  return el("div", { class: "field" }, label, control, help);
}

// Render the form of `schema` into `container` (replacing what was there).
export function buildForm(container, schema) {
  const legend = container.querySelector("legend");
  container.replaceChildren(legend);
  const walk = (properties, prefix, required, target) => {
    for (const [name, raw] of Object.entries(properties || {})) {
      const { schema: field } = unwrap(raw, schema);
      const path = [...prefix, name];
      if (field.type === "object" && field.properties) {
        const sub = el("fieldset", { class: "nested", "data-group": path.join(".") }, el("legend", {}, name));
        walk(field.properties, path, field.required || [], sub);
        target.append(sub);
      } else {
        target.append(input(path, field, prefix.length === 0 && required.includes(name)));
      }
    }
  };
  walk(schema.properties, [], schema.required || [], container);
}

function parseValue(control) {
  const raw = control.value.trim();
  if (raw === "") return undefined;
  const kind = control.dataset.kind;
  if (kind === "integer" || kind === "number") return Number(raw);
  if (kind === "boolean" || control.tagName === "SELECT") return JSON.parse(raw);
  if (control.dataset.json) return JSON.parse(raw);
  return raw;
}

// The `params` object of the request: only the fields that were filled in.
export function readParams(container) {
  const params = {};
  for (const control of container.querySelectorAll("[data-param]")) {
    let value;
    try {
      value = parseValue(control);
    } catch (_) {
      throw new Error(`${control.dataset.param}: not valid JSON`);
    }
    if (value === undefined) continue;
    const parts = control.dataset.param.split(".");
    let target = params;
    for (const part of parts.slice(0, -1)) target = target[part] = target[part] || {};
    target[parts[parts.length - 1]] = value;
  }
  return params;
}
