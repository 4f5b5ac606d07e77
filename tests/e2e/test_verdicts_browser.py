"""In chromium, on an empty store (the bundled reference runs shown): the Tour and Degradation
say what those runs show, with their numbers, not the paper's result as fixed text.
Screenshots of every Tour step, Degradation, Layer responses and Gradient flow go to
test-artifacts/e2e/ (git-ignored), to read each sentence against the chart beside it.

Skipped when /usr/bin/chromium, playwright or a bundled set of plain/resnet 20 and 56 is missing."""

from __future__ import annotations

import os
import re
import time

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, ROOT, T0, Server, shot, wait_app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def see(page, loc, timeout=60_000):
    """Wait for a sentence and scroll it into view (Streamlit scrolls inside its own
    container, so a full-page screenshot shows only what is scrolled to), charts drawn."""
    loc.wait_for(timeout=timeout)
    loc.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)


def _default_set():
    """The set pages show on an empty store (``default: true``, else the first by name)."""
    from resnet_core.reference import list_sets

    sets = [s for s in list_sets(ROOT / "reference") if not s.error and s.run_ids()]
    return sets[0] if sets else None


def _finals(s) -> dict:
    """{model: "26.1% (mean of 3 runs)"}: each model's final eval-mode training error as the
    pages word it, averaged over seeds, from the set's own listing (set.json)."""
    by: dict = {}
    for r in s.meta["runs"]:
        by.setdefault(r["model"], []).append(100 * r["train_error"])
    return {
        m: f"{sum(v) / len(v):.1f}%" + (f" (mean of {len(v)} runs)" if len(v) > 1 else "")
        for m, v in by.items()
    }


def test_tour_and_degradation_state_what_the_reference_runs_show(tmp_path):
    s = _default_set()
    if s is None or not {"plain20", "plain56", "resnet20", "resnet56"} <= {
        r["model"] for r in s.meta["runs"]
    }:
        pytest.skip("no bundled reference set with plain20/56 and resnet20/56")
    e = _finals(s)
    deeper_res = "better" if "deeper-residual-better" in s.meta.get("claims", []) else "worse"
    T0[0] = time.time()
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    server = Server(
        runs_dir,
        tmp_path / "streamlit.log",
        env={"RESNET_LAB_REFERENCE_DIR": str(ROOT / "reference"), "OMP_NUM_THREADS": "1"},
    ).start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{server.url}/tour")
            wait_app(page, "Why deep plain nets fail")
            page.get_by_text(f"runs on the reference set “{s.title}”").first.wait_for()
            # step 1: the plain nets' verdict, with the set's own numbers
            page.get_by_text(
                f"plain-56 ends at {e['plain56']} final training error and plain-20 at {e['plain20']}: "
                "the deeper plain net is worse"
            ).first.wait_for()
            shot(page, "20-tour-1")
            for n, sentence in [
                (2, f"plain-56's final training error is {e['plain56']}"),
                (
                    3,
                    f"ResNet-56 ends at {e['resnet56']} final training error and ResNet-20 at "
                    f"{e['resnet20']}: the deeper residual net is {deeper_res}",
                ),
                # the pair drawn may be either depth: the sentence names it
                (
                    4,
                    re.compile(
                        r"layers respond (more weakly|more strongly) than "
                        r"plain-\d+'s \(mean std"
                    ),
                ),
                (5, "weight-gradient norm grows"),
                (6, "Veit et al. 2016 report"),
            ]:
                page.get_by_role("button", name="Next").click()
                page.get_by_text(f"step {n} of 6").first.wait_for()
                wait_app(page, "Why deep plain nets fail")
                page.get_by_text(sentence).first.wait_for()
                wait_app(page, "Why deep plain nets fail")
                shot(page, f"2{n - 1}-tour-{n}")
            page.goto(f"{server.url}/degradation")
            wait_app(page, "Degradation")
            page.get_by_text(
                f"In the reference runs, ResNet-56 ends at {e['resnet56']} final training error "
                f"and ResNet-20 at {e['resnet20']}: the deeper residual net is {deeper_res}"
            ).first.wait_for()
            # the crossing chart's verdict: where resnet56 stays below resnet20, or that it never does
            see(page, page.get_by_text(re.compile(r"On these runs ResNet-56's training error")).first)
            shot(page, "26-degradation-verdicts")
            page.goto(f"{server.url}/responses")
            wait_app(page, "Layer responses")
            see(page, page.get_by_text(re.compile(r"respond (more weakly|more strongly) than")).first)
            shot(page, "27-responses-verdict")
            page.goto(f"{server.url}/gradients")
            wait_app(page, "Gradient flow")
            see(page, page.get_by_text("weight-gradient norm grows").first, timeout=120_000)
            shot(page, "28-gradients-verdict")
            browser.close()
    finally:
        server.stop()
