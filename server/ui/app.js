// Entry point: the bench view when the page is served over a benchmark run
// (`/bench/run` answers), else the live view of a `ttscale serve` server.

import { ApiError, getJson, setKey, stream } from "./api.js";
import { showBench } from "./bench.js";
import { buildForm, readParams } from "./form.js";
import { RunView } from "./run.js";

const $ = (selector) => document.querySelector(selector);
const status = (text) => { $("#status").textContent = text; };

let strategies = [];
let model = null;
let controller = null;
const view = new RunView($("#live"), $("#detail"));

async function start() {
  const bench = await fetch("/bench/run");
  if (bench.ok) {
    $("#key-form").hidden = true;
    $("#bench").hidden = false;
    await showBench($("#bench"), await bench.json());
    status("benchmark run loaded");
    return;
  }
  $("#live").hidden = false;
  await load();
}

async function load() {
  try {
    strategies = (await getJson("/v1/strategies")).data;
    model = (await getJson("/v1/models")).data[0].id;
  } catch (error) {
    status(error instanceof ApiError && error.status === 401
      ? "this server needs an API key: enter it above" : `could not load: ${error.message}`);
    return;
  }
  $("#model").textContent = `model ${model}`;
  const select = $("#strategy");
  select.replaceChildren(...strategies.map((s) => new Option(s.name, s.name)));
  select.value = strategies.some((s) => s.name === "self_consistency") ? "self_consistency" : strategies[0].name;
  showStrategy();
  status("ready");
}

function showStrategy() {
  const card = strategies.find((s) => s.name === $("#strategy").value);
  $("#strategy-description").textContent = (card.description || "").split("\n")[0];
  buildForm($("#params"), card.parameters);
}

function numberOf(selector) {
  const raw = $(selector).value.trim();
  return raw === "" ? undefined : Number(raw);
}

function requestBody() {
  const budget = {
    max_generated_tokens: numberOf("#budget-tokens"),
    max_wall_s: numberOf("#budget-wall"),
    max_samples: numberOf("#budget-samples"),
  };
  return {
    model,
    messages: [{ role: "user", content: $("#prompt").value }],
    max_tokens: numberOf("#max-tokens"),
    stream: true,
    ttscale: {
      strategy: $("#strategy").value,
      params: readParams($("#params")),
      budget: Object.fromEntries(Object.entries(budget).filter(([, v]) => v !== undefined)),
      include_text: true,
    },
  };
}

async function send(event) {
  event.preventDefault();
  let body;
  try {
    body = requestBody();
  } catch (error) {
    status(error.message);
    return;
  }
  controller = new AbortController();
  $("#send").disabled = true;
  $("#cancel").disabled = false;
  view.reset(body.ttscale.budget);
  status("running");
  const timer = setInterval(() => view.renderGauges(), 500);
  try {
    await stream("/v1/chat/completions", body, controller.signal, (chunk) => view.chunk(chunk));
    status(view.evidence ? "done" : "the stream ended without a result");
  } catch (error) {
    status(error.name === "AbortError" ? "cancelled" : `failed: ${error.message}`);
    if (error.name === "AbortError") view.log("cancelled", "the stream was closed; the server aborts the samples");
  } finally {
    clearInterval(timer);
    view.renderGauges();
    controller = null;
    $("#send").disabled = false;
    $("#cancel").disabled = true;
  }
}

$("#strategy").addEventListener("change", showStrategy);
$("#request-form").addEventListener("submit", send);
$("#cancel").addEventListener("click", () => controller && controller.abort());
$("#detail-close").addEventListener("click", () => { $("#detail").hidden = true; $("#send").focus(); });
$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setKey($("#api-key").value);
  load();
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !$("#detail").hidden) $("#detail-close").click();
});

start();
