"""In chromium, on an empty store (the bundled reference runs shown): the Tour and Degradation
say what those runs show, with their numbers, not the paper's result as fixed text.
Screenshots of every Tour step, Degradation, Layer responses and Gradient flow go to
test-artifacts/e2e/ (git-ignored), to read each sentence against the chart beside it.

Skipped when /usr/bin/chromium, playwright or reference/lesson-cpu is missing."""

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


def test_tour_and_degradation_state_what_the_reference_runs_show(tmp_path):
    if not (ROOT / "reference" / "lesson-cpu" / "set.json").exists():
        pytest.skip("reference/lesson-cpu is not bundled")
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
            # step 1: the plain nets' verdict, from lesson-cpu's records (70.0% vs 37.1%)
            page.get_by_text("plain-56 ends at 70.0% final training error").first.wait_for()
            shot(page, "20-tour-1")
            for n, sentence in [
                (2, "plain-56's final training error is 70.0%"),
                (
                    3,
                    "ResNet-56 ends at 40.1% final training error and ResNet-20 at "
                    "30.1%: the deeper residual net is worse, by 10.0 points",
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
                "In the reference runs, ResNet-56 ends at 40.1% final training error and ResNet-20 at 30.1%"
            ).first.wait_for()
            see(page, page.get_by_text("2,340 steps against the paper's 64,000").first)
            shot(page, "26-degradation-verdicts")
            page.goto(f"{server.url}/responses")
            wait_app(page, "Layer responses")
            see(page, page.get_by_text("(mean std 4.38 vs 1.49)").first)
            shot(page, "27-responses-verdict")
            page.goto(f"{server.url}/gradients")
            wait_app(page, "Gradient flow")
            see(page, page.get_by_text("weight-gradient norm grows").first, timeout=120_000)
            shot(page, "28-gradients-verdict")
            browser.close()
    finally:
        server.stop()
