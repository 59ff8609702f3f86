"""The browser view in a real browser (Debian's chromium, driven by Playwright) against
a live `ttscale serve` of the embedded default model, and `ttscale bench view` over a
small recorded run. Set TTSCALE_UI_SCREENSHOTS=docs/images to refresh the docs'
pictures (tests/support/chromium.py)."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support.bench_fixtures import small_run
from .support.chromium import chromium, screenshot
from .support.servers import free_port, running_process

TTSCALE = [sys.executable, "-m", "ttscale.cli"]
LAPTOP = {"width": 1366, "height": 900}
RUN_LIMIT_MS = 120_000
API_KEY = "ui-test-key"
KEYED = {"authorization": f"Bearer {API_KEY}"}


@contextlib.contextmanager
def ttscale_process(args: list[str], env: dict[str, str], log: Path, ready: str) -> Iterator[str]:
    """`ttscale ARGS --port P` until the block ends; yields its base URL once `ready`
    (a path) answers 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running_process([*TTSCALE, *args, "--port", str(port)], env, log, f"{url}{ready}"):
        yield url


@pytest.fixture(scope="module")
def server(default_model_path, tmp_path_factory, subprocess_env, starts_vllm) -> Iterator[str]:
    """`ttscale serve` on the embedded default model with an API key, shared by this
    module's tests: the page must send the key with everything it calls."""
    log = tmp_path_factory.mktemp("ui-server") / "server.log"
    with ttscale_process(["serve", "--api-key", API_KEY], subprocess_env, log, "/health") as url:
        yield url


@pytest.fixture(scope="module")
def browser(subprocess_env) -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser) -> Iterator[Any]:
    page = browser.new_page(viewport=LAPTOP)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.close()
    assert errors == [], errors  # no script error anywhere on the way


def open_ui(page: Any, url: str) -> None:
    """Open the page and give it the server's API key."""
    page.goto(f"{url}/ui/")
    expect_status(page, "this server needs an API key: enter it above", 30_000)
    page.fill("#api-key", API_KEY)
    page.press("#api-key", "Enter")
    expect_status(page, "ready", 30_000)


def expect_status(page: Any, text: str, timeout: int = RUN_LIMIT_MS) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#status")).to_have_text(text, timeout=timeout)


def fill_params(page: Any, **values: str) -> None:
    for name, value in values.items():
        control = page.locator(f"[data-param='{name}']")
        if control.evaluate("node => node.tagName") == "SELECT":
            control.select_option(value)
        else:
            control.fill(value)


def metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_the_form_is_built_from_the_served_schemas(server, page):
    cards = httpx.get(f"{server}/v1/strategies", headers=KEYED).json()["data"]
    open_ui(page, server)
    options = page.locator("#strategy option").evaluate_all("nodes => nodes.map(n => n.value)")
    assert options == [card["name"] for card in cards]
    for name in ["step_search", "deepconf"]:
        page.select_option("#strategy", name)
        schema = next(card["parameters"] for card in cards if card["name"] == name)
        fields = page.locator("#params > .field [data-param]").evaluate_all(
            "nodes => nodes.map(n => n.dataset.param)"
        )
        groups = page.locator("#params > fieldset[data-group]").evaluate_all(
            "nodes => nodes.map(n => n.dataset.group)"
        )
        assert sorted(fields + groups) == sorted(schema["properties"])
        required = page.locator("#params [data-param][required]").evaluate_all(
            "nodes => nodes.map(n => n.dataset.param)"
        )
        assert sorted(required) == sorted(schema.get("required", []))
    # keyboard: every control has a label, and Tab reaches the send button
    unlabelled = page.locator("#request-form input, #request-form select, #request-form textarea")
    ids = unlabelled.evaluate_all("nodes => nodes.map(n => n.id)")
    for control_id in ids:
        assert page.locator(f"label[for='{control_id}']").count() == 1, control_id
    page.focus("#strategy")
    for _ in range(len(ids) + 2):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "send":
            break
    assert page.evaluate("document.activeElement.id") == "send"


def test_a_self_consistency_run_streams_its_samples_and_ends_with_the_pick(server, page):
    open_ui(page, server)
    page.select_option("#strategy", "self_consistency")
    fill_params(page, n="3", adaptive="false", parallel="1")
    page.fill("#max-tokens", "12")
    page.click("#send")
    # one at a time (parallel 1): the first sample shows while the run still goes on
    page.wait_for_selector("#samples tbody tr")
    assert page.locator("#status").text_content() == "running"
    assert page.locator("#pick").is_hidden()
    expect_status(page, "done")
    rows = page.locator("#samples tbody tr")
    assert rows.count() == 3
    assert page.locator("#samples tbody tr.chosen").count() == 1
    explanation = page.locator("#pick-explanation").text_content()
    assert explanation.startswith("plurality vote over 3 samples")
    assert page.locator("#stop-reason").text_content() == "completed"
    answered = [a for a in rows.locator("td:nth-child(2)").all_text_contents() if a]
    votes = page.locator("#votes .bar-value").all_text_contents()
    assert sum(float(v) for v in votes) == len(answered)
    tokens = page.locator("[data-gauge='tokens'] .gauge-value").text_content()
    spent = sum(int(t) for t in rows.locator("td:nth-child(4)").all_text_contents())
    assert tokens.startswith(f"{spent} / ")
    screenshot(page, "ui-self-consistency")
    page.locator("#samples tbody tr.chosen button").click()
    assert page.locator("#detail").is_visible()
    assert page.locator("#detail-body pre").text_content().strip()
    page.keyboard.press("Escape")
    assert page.locator("#detail").is_hidden()


def test_cancel_closes_the_stream_and_the_server_aborts_the_samples(server, page):
    aborted_before = metric(server, "ttscale_samples_aborted_total")
    cancelled = '{outcome="cancelled",strategy="self_consistency"}'
    cancelled_before = metric(server, "ttscale_requests_total", cancelled)
    open_ui(page, server)
    page.select_option("#strategy", "self_consistency")
    fill_params(page, n="4", adaptive="false", parallel="4", **{"sampling.ignore_eos": "true"})
    page.fill("#max-tokens", "2000")
    page.fill("#prompt", "Write a long story about a lighthouse keeper.")
    page.click("#send")
    deadline = time.monotonic() + 30
    while metric(server, "ttscale_samples_in_flight") < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(server, "ttscale_samples_in_flight") == 4
    page.click("#cancel")
    expect_status(page, "cancelled", 10_000)
    deadline = time.monotonic() + 30
    while metric(server, "ttscale_samples_in_flight") > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(server, "ttscale_samples_in_flight") == 0
    assert metric(server, "ttscale_samples_aborted_total") == aborted_before + 4
    assert metric(server, "ttscale_requests_total", cancelled) == cancelled_before + 1
    assert page.locator("#send").is_enabled() and page.locator("#cancel").is_disabled()


def test_a_step_search_run_draws_its_tree(server, page):
    open_ui(page, server)
    page.select_option("#strategy", "step_search")
    fill_params(
        page, verifier="judge", beam_width="1", expansions="3", max_steps="2",
        step_max_tokens="16", refine="false",
    )  # fmt: skip
    page.fill("#max-tokens", "16")
    page.click("#send")
    expect_status(page, "done")
    levels = page.locator("#tree .level")
    assert levels.count() >= 1
    first = levels.first
    assert first.locator(".node").count() == 3
    assert first.locator(".node.kept").count() == 1
    assert first.locator(".node.pruned").count() == 2
    assert page.locator("#candidates tbody tr").count() >= 1
    assert page.locator("#candidates tbody tr.chosen").count() == 1
    assert "beam search (width 1, 3 expansions)" in page.locator("#pick-explanation").text_content()
    screenshot(page, "ui-step-search")


def test_a_bench_run_directory_renders(tmp_path, subprocess_env, page):
    run = small_run(tmp_path / "run")
    log = tmp_path / "view.log"
    with ttscale_process(["bench", "view", str(run)], subprocess_env, log, "/bench/run") as url:
        page.goto(url)
        expect_status(page, "benchmark run loaded", 30_000)
        assert page.locator("#live").is_hidden()
        marks = {
            row.get_attribute("data-problem"): row.locator("button.mark").all_text_contents()
            for row in page.locator("#bench-problems tbody tr").all()
        }
        assert marks == {"p1": ["✓", "✓"], "p2": ["✗", "✓"]}
        plot = page.locator("#bench-plots img[alt='plot gsm8k_compute.png']")
        plot.wait_for()
        page.wait_for_function(
            "document.querySelector(\"#bench-plots img[alt='plot gsm8k_compute.png']\")"
            ".naturalWidth > 0"
        )
        page.get_by_role("button", name="p1 self_consistency@5: right").click()
        page.wait_for_selector("#bench-record:not([hidden])")
        assert page.locator("#record-answer").text_content() == "18"
        assert page.locator("#record-votes .leader .bar-label").text_content() == "18"
        votes = dict(
            zip(
                page.locator("#record-votes .bar-label").all_text_contents(),
                page.locator("#record-votes .bar-value").all_text_contents(),
                strict=True,
            )
        )
        assert votes == {"18": "3", "20": "2"}
        assert page.locator("#record-samples tbody tr").count() == 5
        screenshot(page, "ui-bench")


FEED_A_LARGE_RUN = """
async () => {
  const { RunView } = await import("/ui/run.js");
  const view = new RunView(document.querySelector("#live"), document.querySelector("#detail"));
  view.reset({ max_generated_tokens: 10000 });
  const chunk = (ttscale, finish_reason = null) =>
    view.chunk({ choices: [{ index: 0, delta: {}, finish_reason }], ttscale });
  const started = performance.now();
  const votes = {};
  chunk({ event: "threshold", threshold: 11.5, warmup_minima: [11.5, 12.0, 13.25] });
  for (let i = 0; i < 64; i += 1) {
    const answer = String(i % 5);
    chunk({ event: "sample", index: i, tokens: 100, finish_reason: "stop", answer,
            mean_entropy: 0.5, generated_tokens: 100 * (i + 1), total_flops: 1e9 * (i + 1) });
    votes[answer] = (votes[answer] || 0) + 1;
    chunk({ event: "votes", votes: { ...votes } });
  }
  let parents = [0];
  let next = 1;
  for (let depth = 1; depth <= 5; depth += 1) {
    const nodes = [];
    for (const parent of parents) for (let k = 0; k < 4; k += 1) {
      nodes.push({ id: next, parent, score: next / 100, kept: false, finished: false });
      next += 1;
    }
    nodes.slice(-2).forEach((n) => { n.kept = true; });
    chunk({ event: "depth", depth, best_step_score: 0.9, beams: 2, nodes });
    parents = nodes.filter((n) => n.kept).map((n) => n.id);
  }
  const candidates = Array.from({ length: 64 }, (_, i) => ({
    index: i, answer: String(i % 5), answer_class: i % 5, tokens: 100, finish_reason: "stop",
    mean_entropy: 0.5, mean_logprob: -0.4, scores: { confidence: 10 + (i % 4) },
    text: `sample ${i}` }));
  chunk({ strategy: "deepconf", answer: "0", chosen: 0, candidates, votes,
          stop_reason: "early_stop", explanation: "confidence-weighted vote; consensus",
          budget: { granted: { max_generated_tokens: 10000 },
                    spent: { generated_tokens: 6400, total_flops: 6.4e10, wall_s: 3.0 } } },
        "stop");
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  return performance.now() - started;
}
"""


def test_64_samples_and_a_5_step_tree_render_quickly_on_a_laptop_screen(server, page):
    """The run view fed a large run's events directly (no engine): 64 samples with a
    vote after each, a DeepConf threshold, a five-depth tree and a result that stopped
    early, with each trace's confidence."""
    open_ui(page, server)
    elapsed_ms = page.evaluate(FEED_A_LARGE_RUN)
    assert elapsed_ms < 2000, elapsed_ms
    assert page.locator("#samples tbody tr").count() == 64
    assert page.locator("#tree .level").count() == 5
    assert page.locator("#tree .level").nth(4).locator(".node.kept").count() == 2
    assert page.locator("#votes .bar-row").count() == 5
    assert page.locator("#deepconf-threshold").text_content() == "11.5000"
    confidences = page.locator("#deepconf .confidences .bar-row")
    assert confidences.count() == 64
    assert page.locator("#deepconf .confidences .bar-row.below").count() == 32  # 10 and 11
    assert page.locator("#votes-stop").text_content().startswith("stopped early: ")
    assert page.locator("#pick-answer").text_content() == "0"
    assert page.locator("[data-gauge='tokens'] .gauge-value").text_content() == "6400 / 10000"
    # nothing wider than the window: no sideways scrolling on a laptop screen
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


FEED_PARTICLES = """
async () => {
  const { RunView } = await import("/ui/run.js");
  const view = new RunView(document.querySelector("#live"), document.querySelector("#detail"));
  view.reset({});
  const step = (fields) => view.chunk({ choices: [{ index: 0, delta: {}, finish_reason: null }],
                                        ttscale: { event: "step", ...fields } });
  // step 1: particles 0-3 scored; 3 finished; 0 copied twice, 1 once, 2 dropped
  step({ step: 1, particles: [0, 1, 2, 3], scores: [0.9, 0.6, 0.2, 0.8], live: 3, finished: 1,
         ess: 2.1, live_ids: [0, 1, 2], weights: [0.6, 0.3, 0.1], finished_ids: [3],
         parents: [0, 0, 1], children: [4, 5, 6] });
  // step 2: the copies are scored and all finish
  step({ step: 2, particles: [4, 5, 6], scores: [0.95, 0.7, 0.5], live: 0, finished: 4,
         ess: 0, live_ids: [], weights: [], finished_ids: [4, 5, 6], parents: [], children: [] });
}
"""


def test_particle_filtering_steps_show_resampling(server, page):
    """Particles fed to the run view: each step a row, the dropped ones pruned, the
    copies counted, the finished marked."""
    open_ui(page, server)
    page.evaluate(FEED_PARTICLES)
    assert page.locator("#tree-title").text_content() == "Particles"
    first, second = page.locator("#tree .level").all()
    assert first.locator(".node").count() == 4
    assert first.locator(".node.kept").all_text_contents() == [
        "p00.900 w 0.60 \u00d72",
        "p10.600 w 0.30 \u00d71",
    ]
    assert first.locator(".node.pruned").count() == 1  # p2: no copy went on
    assert first.locator(".node.done").count() == 1  # p3 finished
    assert second.locator(".node.done").count() == 3
