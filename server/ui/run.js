// One streamed strategy run as the page shows it: samples, votes, budget gauges, the
// search tree, DeepConf's threshold, the pick. Fed the stream's chunks one at a time.

import { el, engineering, fmt, renderBars } from "./dom.js";

export class RunView {
  constructor(root, detail) {
    this.root = root;
    this.detail = detail;
    this.samples = new Map(); // index -> {row, data}: the samples as they finish
    this.candidates = new Map(); // a search's final candidates (their own numbering)
    this.reset({});
  }

  reset(granted) {
    this.granted = granted;
    this.started = performance.now();
    this.spent = { tokens: 0, flops: 0 };
    this.evidence = null;
    this.samples.clear();
    this.candidates.clear();
    this.treeLevels = 0;
    this.q("#samples tbody").replaceChildren();
    this.q("#candidates tbody").replaceChildren();
    this.q("#votes").replaceChildren(el("p", { class: "muted" }, "no votes yet"));
    this.q("#events").replaceChildren();
    this.q("#tree").replaceChildren();
    this.q("#tree-section").hidden = true;
    this.q("#pick").hidden = true;
    this.q("#deepconf").hidden = true;
    this.detail.hidden = true;
    this.renderGauges();
  }

  q(selector) {
    return this.root.querySelector(selector);
  }

  // A chunk of the stream: a progress event, the final evidence, or an error.
  chunk(body) {
    if (body.error) {
      this.log("error", body.error.message);
      throw new Error(body.error.message);
    }
    const choice = (body.choices || [])[0];
    if (!body.ttscale) return;
    if (choice && choice.finish_reason) this.finish(body.ttscale);
    else this.event(body.ttscale);
  }

  event(event) {
    const handler = {
      sample: () => this.onSample(event),
      votes: () => renderBars(this.q("#votes"), event.votes, leader(event.votes)),
      aborted: () => this.onAborted(event),
      threshold: () => this.onThreshold(event),
      low_confidence: () => this.setState(event.index, "low confidence", "aborted"),
      depth: () => this.onDepth(event),
      step: () => this.onStep(event),
    }[event.event];
    if (handler) handler();
    this.log(event.event, summary(event));
  }

  log(name, text) {
    const elapsed = ((performance.now() - this.started) / 1000).toFixed(1);
    this.q("#events").append(el("li", {}, `${elapsed}s `, el("strong", {}, name), ` ${text}`));
    this.renderGauges();
  }

  table(search) {
    return search ? [this.candidates, "#candidates tbody", "candidate"] : [this.samples, "#samples tbody", "sample"];
  }

  row(index, search = false) {
    const [map, body, noun] = this.table(search);
    let entry = map.get(index);
    if (entry) return entry;
    const button = el("button", { type: "button", class: "link", "aria-label": `${noun} ${index}` }, String(index));
    button.addEventListener("click", () => this.showCandidate(index, search));
    const row = el("tr", { "data-index": index });
    row.append(el("td", {}, button));
    for (let i = 0; i < 8; i += 1) row.append(el("td"));
    entry = { row, data: { index } };
    map.set(index, entry);
    const rows = this.q(body);
    const after = [...rows.children].find((r) => Number(r.dataset.index) > index);
    rows.insertBefore(row, after || null);
    return entry;
  }

  fill(index, data, search = false) {
    const entry = this.row(index, search);
    Object.assign(entry.data, data);
    const d = entry.data;
    const cells = entry.row.children;
    cells[1].textContent = d.answer ?? "";
    cells[1].title = d.answer ?? "";
    cells[2].textContent = fmt(d.answer_class);
    cells[3].textContent = fmt(d.tokens);
    cells[4].textContent = d.finish_reason ?? "";
    cells[5].textContent = fmt(d.mean_entropy);
    cells[6].textContent = fmt(d.mean_logprob);
    cells[7].textContent = Object.entries(d.scores || {}).map(([k, v]) => `${k} ${fmt(v)}`).join("; ");
    cells[8].textContent = d.state ?? "";
    entry.row.classList.toggle("aborted", d.aborted === true);
  }

  setState(index, state, kind) {
    this.fill(index, { state, aborted: kind === "aborted" });
  }

  onSample(event) {
    this.spent.tokens = event.generated_tokens ?? this.spent.tokens;
    this.spent.flops = event.total_flops ?? this.spent.flops;
    const aborted = event.finish_reason === "abort";
    this.fill(event.index, { ...event, state: aborted ? "aborted" : "finished", aborted });
  }

  onAborted(event) {
    this.spent.tokens = event.generated_tokens ?? this.spent.tokens;
    event.indices.forEach((index, i) => {
      this.fill(index, { tokens: event.tokens[i], finish_reason: "abort", state: "aborted", aborted: true });
    });
  }

  onThreshold(event) {
    const panel = this.q("#deepconf");
    panel.hidden = false;
    panel.replaceChildren(
      el("h3", {}, "DeepConf"),
      el("p", {}, "confidence threshold ", el("strong", { id: "deepconf-threshold" }, fmt(event.threshold, 4)),
        ` from ${event.warmup_minima.length} warm-up traces (their lowest windowed confidence: ${fmt(event.warmup_minima)})`),
      el("p", { class: "muted small" }, "traces whose windowed confidence falls below it are stopped in the engine"),
    );
  }

  treeLevel(title, nodes) {
    this.q("#tree-section").hidden = false;
    this.treeLevels += 1;
    const level = el("div", { class: "level", role: "group", "aria-label": title }, el("span", { class: "level-title" }, title));
    for (const node of nodes) level.append(node);
    this.q("#tree").append(level);
  }

  onDepth(event) {
    this.q("#tree-title").textContent = "Beam search";
    const nodes = (event.nodes || []).map((n) => el(
      "span",
      { class: `node ${n.kept ? "kept" : "pruned"}${n.finished ? " done" : ""}`, title: n.kept ? "kept" : "pruned" },
      `#${n.id}`, el("small", {}, ` ← #${n.parent}`), el("br"), fmt(n.score, 3),
      n.kept ? "" : el("small", {}, " pruned"),
    ));
    this.treeLevel(`depth ${event.depth}`, nodes);
  }

  onStep(event) {
    this.q("#tree-title").textContent = "Particles";
    const finished = new Set(event.finished_ids || []);
    const copies = {};
    (event.parents || []).forEach((p) => { copies[p] = (copies[p] || 0) + 1; });
    const weightOf = {};
    (event.live_ids || []).forEach((id, i) => { weightOf[id] = (event.weights || [])[i]; });
    const nodes = (event.particles || []).map((id, i) => {
      const resampled = copies[id] || 0;
      const state = finished.has(id) ? "done" : resampled ? "kept" : (event.parents || []).length ? "pruned" : "kept";
      return el(
        "span",
        { class: `node ${state}`, title: `copied ${resampled} times` },
        `p${id}`, el("br"), fmt(event.scores[i], 3),
        weightOf[id] !== undefined ? el("small", {}, ` w ${fmt(weightOf[id], 2)}`) : "",
        finished.has(id) ? el("small", {}, " finished") : el("small", {}, ` ×${resampled}`),
      );
    });
    this.treeLevel(`step ${event.step} (ESS ${fmt(event.ess, 2)})`, nodes);
  }

  finish(evidence) {
    this.evidence = evidence;
    const spent = evidence.budget ? evidence.budget.spent : {};
    this.granted = evidence.budget ? evidence.budget.granted : this.granted;
    this.spent = { tokens: spent.generated_tokens, flops: spent.total_flops, wall: spent.wall_s };
    // A search's candidates are its beams or particles, numbered apart from its samples.
    const search = this.treeLevels > 0;
    for (const c of evidence.candidates || []) {
      const state = c.index === evidence.chosen ? "chosen" : (c.finish_reason === "abort" ? "aborted" : "finished");
      this.fill(c.index, { ...c, state }, search);
    }
    const [map] = this.table(search);
    for (const entry of map.values()) entry.row.classList.toggle("chosen", entry.data.index === evidence.chosen);
    if (Object.keys(evidence.votes || {}).length) renderBars(this.q("#votes"), evidence.votes, pickLabel(evidence));
    else this.q("#votes").replaceChildren(el("p", { class: "muted" }, "no votes in the result (a strategy that scores, or no answers to vote on)"));
    this.showConfidences(evidence);
    const votesNote = evidence.stop_reason === "early_stop" ? `stopped early: ${evidence.explanation}` : "";
    if (votesNote) this.q("#votes").append(el("p", { id: "votes-stop", class: "small" }, votesNote));
    const pick = this.q("#pick");
    pick.hidden = false;
    const chosen = evidence.chosen;
    pick.replaceChildren(
      el("p", {}, "Answer ", el("strong", { id: "pick-answer" }, evidence.answer ?? "(none)"),
        chosen === null ? "" : ` from ${search ? "candidate" : "sample"} ${chosen}`),
      el("p", { id: "pick-explanation" }, evidence.explanation),
      el("p", { class: "muted small" }, `stop reason: `, el("span", { id: "stop-reason" }, evidence.stop_reason)),
    );
    if (chosen !== null && chosen !== undefined) {
      const show = el("button", { type: "button" }, "Show the chosen text");
      show.addEventListener("click", () => this.showCandidate(chosen, search));
      pick.append(show);
    }
    this.log("done", `${evidence.stop_reason}: ${evidence.explanation}`);
  }

  // DeepConf: each kept trace's confidence as a bar, the threshold as a line across them.
  showConfidences(evidence) {
    const panel = this.q("#deepconf");
    const threshold = Number(panel.querySelector("#deepconf-threshold")?.textContent);
    const traces = (evidence.candidates || []).filter((c) => typeof (c.scores || {}).confidence === "number");
    if (panel.hidden || !traces.length || Number.isNaN(threshold)) return;
    const top = Math.max(threshold, ...traces.map((c) => c.scores.confidence)) || 1;
    const rows = traces.map((c) => {
      const below = c.scores.confidence < threshold;
      return el("div", { class: `bar-row${below ? " below" : ""}`, "data-index": c.index },
        el("span", { class: "bar-label" }, `trace ${c.index}`),
        el("span", { class: "bar-track threshold", style: `--at: ${(100 * threshold) / top}%` },
          el("span", { class: "bar", style: `width: ${(100 * c.scores.confidence) / top}%` })),
        el("span", { class: "bar-value" }, fmt(c.scores.confidence, 2)));
    });
    panel.append(el("div", { class: "bars confidences", "aria-label": "trace confidences" }, ...rows));
  }

  showCandidate(index, search = false) {
    const [map, , noun] = this.table(search);
    const entry = map.get(index);
    const data = entry ? entry.data : { index };
    const body = this.detail.querySelector("#detail-body");
    const parts = [el("p", { id: "detail-head" }, `${noun} ${index}: ${data.tokens ?? "?"} tokens, ${data.finish_reason ?? "running"}`)];
    if (data.reasoning) parts.push(el("h3", {}, "Thinking"), el("pre", { class: "thinking" }, data.reasoning));
    if (data.content !== undefined && data.content !== null) parts.push(el("h3", {}, "Answer"), el("pre", {}, data.content));
    else if (data.text !== undefined) parts.push(el("h3", {}, "Text"), el("pre", {}, data.text));
    else parts.push(el("p", { class: "muted" }, "its text arrives with the result (aborted samples have none)"));
    body.replaceChildren(...parts);
    this.detail.hidden = false;
    this.detail.querySelector("#detail-close").focus();
  }

  renderGauges() {
    const g = this.granted || {};
    const wall = this.evidence ? this.spent.wall : (performance.now() - this.started) / 1000;
    const gauges = [
      ["tokens", this.spent.tokens || 0, g.max_generated_tokens, fmt],
      ["FLOPs", this.spent.flops || 0, null, engineering],
      ["wall s", wall || 0, g.max_wall_s, (v) => fmt(v, 1)],
    ];
    this.q("#gauges").replaceChildren(...gauges.map(([name, value, cap, show]) => {
      const meter = el("meter", { min: 0, max: cap || Math.max(value, 1), value, "aria-label": name });
      return el("div", { class: "gauge", "data-gauge": name },
        el("span", { class: "gauge-name" }, name), meter,
        el("span", { class: "gauge-value" }, `${show(value)} / ${cap ? show(cap) : "no cap"}`));
    }));
  }
}

function leader(votes) {
  const entries = Object.entries(votes || {});
  if (!entries.length) return null;
  return entries.reduce((a, b) => (b[1] > a[1] ? b : a))[0];
}

function pickLabel(evidence) {
  const chosen = (evidence.candidates || []).find((c) => c.index === evidence.chosen);
  if (!chosen) return leader(evidence.votes);
  const sameClass = (evidence.candidates || []).filter((c) => c.answer_class === chosen.answer_class && c.answer_class !== null);
  const labels = Object.keys(evidence.votes || {});
  for (const c of [chosen, ...sameClass]) if (labels.includes(c.answer)) return c.answer;
  return leader(evidence.votes);
}

function summary(event) {
  const { event: _, ...rest } = event;
  const text = JSON.stringify(rest);
  return text.length > 160 ? `${text.slice(0, 157)}...` : text;
}
