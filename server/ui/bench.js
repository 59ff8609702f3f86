// The view of a `ttscale bench` run directory (served by `ttscale bench view OUT`):
// the summary, the compute-accuracy plot, right/wrong per problem and setting, and one
// problem's samples and votes.

import { getJson } from "./api.js";
import { el, fmt, renderBars } from "./dom.js";

export async function showBench(root, run) {
  const config = root.querySelector("#bench-config");
  config.replaceChildren();
  for (const [name, value] of Object.entries(run.config)) {
    config.append(el("dt", {}, name), el("dd", {}, typeof value === "object" ? JSON.stringify(value) : String(value)));
  }
  table(root.querySelector("#bench-summary"), run.summary);
  const plots = root.querySelector("#bench-plots");
  plots.replaceChildren(...run.plots.map((name) => el(
    "figure", {}, el("img", { src: `/bench/plots/${encodeURIComponent(name)}`, alt: `plot ${name}` }),
    el("figcaption", { class: "muted small" }, name),
  )));
  problems(root, run);
}

function table(node, rows) {
  if (!rows.length) {
    node.replaceChildren(el("caption", {}, "no summary.csv (run `ttscale bench report`)"));
    return;
  }
  const columns = Object.keys(rows[0]);
  node.replaceChildren(
    el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", { scope: "col" }, c)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...columns.map((c) => el("td", {}, r[c]))))),
  );
}

function problems(root, run) {
  const node = root.querySelector("#bench-problems");
  const head = el("tr", {}, el("th", { scope: "col" }, "problem"), el("th", { scope: "col" }, "gold"),
    ...run.settings.map((s) => el("th", { scope: "col" }, s)));
  const rows = run.problems.map((p) => {
    const cells = run.settings.map((setting) => {
      const correct = p.results[setting];
      if (correct === undefined) return el("td", {}, "");
      const button = el("button", {
        type: "button", class: `mark ${correct ? "right" : "wrong"}`,
        "aria-label": `${p.problem_id} ${setting}: ${correct ? "right" : "wrong"}`,
      }, correct ? "✓" : "✗");
      button.addEventListener("click", () => showRecord(root, p, setting));
      return el("td", {}, button);
    });
    return el("tr", { "data-problem": p.problem_id }, el("th", { scope: "row" }, p.problem_id), el("td", {}, p.gold), ...cells);
  });
  node.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

async function showRecord(root, problem, setting) {
  const query = new URLSearchParams({ dataset: problem.dataset, problem: problem.problem_id, setting });
  const record = await getJson(`/bench/record?${query}`);
  const section = root.querySelector("#bench-record");
  section.hidden = false;
  root.querySelector("#record-title").textContent = `${record.problem_id}, ${record.setting}`;
  root.querySelector("#record-head").replaceChildren(
    el("p", {}, "answer ", el("strong", { id: "record-answer" }, record.answer ?? "(none)"),
      `, gold ${record.gold}: `, el("strong", { class: record.correct ? "right" : "wrong" }, record.correct ? "right" : "wrong")),
    el("p", { class: "muted small" }, `stop reason ${record.stop_reason}; ${record.generated_tokens} tokens generated; ${fmt(record.latency_s, 1)} s`),
  );
  renderBars(root.querySelector("#record-votes"), votesOf(record.samples), record.answer);
  const columns = ["index", "answer", "answer_class", "correct", "tokens", "finish_reason", "mean_entropy", "mean_logprob", "scores"];
  root.querySelector("#record-samples").replaceChildren(
    el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", { scope: "col" }, c)))),
    el("tbody", {}, ...record.samples.map((s, i) => el(
      "tr", { class: s.correct ? "right" : "" },
      ...columns.map((c) => el("td", {}, c === "index" ? (s.index ?? i) : c === "scores"
        ? Object.entries(s.scores || {}).map(([k, v]) => `${k} ${fmt(v)}`).join("; ") : fmt(s[c]))),
    ))),
  );
  section.scrollIntoView();
  section.querySelector("h2").focus();
}

// One vote per sample with an answer, keyed by the first spelling of each answer class.
function votesOf(samples) {
  const names = {};
  const votes = {};
  for (const s of samples) {
    if (s.answer === null || s.answer === undefined) continue;
    const key = s.answer_class ?? s.answer;
    names[key] = names[key] ?? s.answer;
    votes[names[key]] = (votes[names[key]] || 0) + 1;
  }
  return votes;
}
