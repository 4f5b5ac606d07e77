"""The real app in Debian's chromium: launch a small run from the Lab, watch its progress move,
reload the page and restart the server mid-run and find the run again, see its curve on
Degradation. Screenshots go to test-artifacts/e2e/ (git-ignored).

Skipped when /usr/bin/chromium or playwright is missing.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

ITERATIONS = 600  # resnet8, width 4, on digits: ~20 s on an idle core
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``streamlit run app/main.py`` on a free port, the store in a temporary folder."""

    def __init__(self, runs_dir: Path, log: Path, port: int | None = None, env: dict | None = None):
        self.runs_dir, self.log, self.port = runs_dir, log, port or free_port()
        self.env = env or {}
        self.proc = None

    def start(self, timeout: float = 60) -> Server:
        env = dict(os.environ, RESNET_LAB_RUNS_DIR=str(self.runs_dir), PYTHONUNBUFFERED="1", **self.env)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(ROOT / "app" / "main.py"),
                "--server.port",
                str(self.port),
                "--server.headless",
                "true",
                "--server.address",
                "127.0.0.1",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=str(ROOT),
            env=env,
            stdout=logf,
            stderr=logf,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        logf.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"streamlit did not answer in {timeout} s: {self.log.read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


def wait_app(page, heading: str, timeout=45_000):
    """Wait until the page's title is drawn and the script has stopped running."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout)
    page.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=timeout)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout
    )


T0 = [time.time()]


def shot(page, name):
    print(f"[e2e] {time.time() - T0[0]:6.1f} s  {name}", flush=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def progress_of(page):
    """(step, text) of the first running run's progress bar in the Lab's queue, or None."""
    bar = page.locator("[data-testid='stProgress']", has_text="step ").first
    try:
        text = bar.inner_text(timeout=2000)
    except Exception:
        return None
    m = re.search(r"step (\d+)/", text)
    return (int(m.group(1)), text) if m else None


def choose(page, label: str, option: str):
    box = page.locator("[data-testid='stSelectbox']", has_text=label).first
    box.click()
    page.get_by_role("option").filter(has_text=option).first.click()


def test_launch_watch_reload_restart_degradation(tmp_path):
    T0[0] = time.time()
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    server = Server(runs_dir, tmp_path / "streamlit.log").start()
    from resnet_core import RunStore, jobs

    store = RunStore(runs_dir)
    t0 = time.time()
    print(f"[e2e] {t0 - T0[0]:6.1f} s  server up", flush=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(server.url)
            wait_app(page, "Lab")
            # a small residual net on digits: smoke budget, more iterations, narrow
            page.get_by_text("Residual (ResNet)", exact=True).click()
            depth = page.get_by_label(re.compile(r"^Depth"))
            depth.fill("8")
            depth.press("Enter")
            choose(page, "Budget preset", "smoke")
            page.get_by_text("Options (empty = the preset's value)").click()
            it = page.get_by_label("Iterations", exact=True)
            it.fill(str(ITERATIONS))
            it.press("Enter")
            w = page.get_by_label(re.compile(r"^Width"))
            w.fill("4")
            w.press("Enter")
            page.get_by_text("Record per-layer statistics").click()  # not needed here: faster
            page.wait_for_timeout(500)
            shot(page, "01-lab-form")
            page.get_by_role("button", name="Launch", exact=True).click()
            ok = page.locator("[data-testid='stAlertContentSuccess']", has_text="Queued")
            ok.wait_for()
            run_id = re.search(r"Queued (\S+)", ok.inner_text()).group(1)
            suffix = run_id[-6:]
            cfg = store.run(run_id).read_config()
            assert (cfg.model, cfg.iterations, cfg.width, cfg.recorders) == (
                "cifar_resnet8",
                ITERATIONS,
                4,
                [],
            )

            # its progress moves (the queue refreshes itself every 2 s)
            seen = []
            deadline = time.time() + 120
            while time.time() < deadline:
                pr = progress_of(page)
                if pr and pr[0] > 0:
                    if not seen or pr[0] > seen[-1][0]:
                        seen.append(pr)
                    if len(seen) >= 2:
                        break
                page.wait_for_timeout(700)
            shot(page, "02-lab-progress")
            assert len(seen) >= 2, f"progress did not move: {seen}; status {store.run(run_id).read_status()}"
            assert f"/{ITERATIONS}" in seen[-1][1] and "ETA" in seen[-1][1], seen

            # reload the page mid-run: the run is still there, still training
            page.reload()
            wait_app(page, "Lab")
            page.get_by_text(suffix).first.wait_for()
            st_ = store.run(run_id).read_status()
            shot(page, "03-lab-after-reload")
            assert st_["state"] in ("running", "done"), st_

            # restart the server mid-run: the new server finds the run again
            server.stop()
            server.start()
            page.goto(server.url)
            wait_app(page, "Lab")
            page.get_by_text(suffix).first.wait_for()
            shot(page, "04-lab-after-restart")

            # Degradation shows its curve (legend entry with the run's suffix): as many points
            # as the run had logged rows (training and test error) when the page was drawn
            def logged():
                return sum(
                    1
                    for m in store.run(run_id).read_metrics()
                    if m.get("split") in ("train", "test") and m.get("error") is not None
                )

            before = logged()
            page.goto(f"{server.url}/degradation")
            wait_app(page, "Degradation")
            page.locator(".js-plotly-plot").first.wait_for()
            page.locator(".legendtext", has_text=suffix).first.wait_for(timeout=30_000)
            n_points = page.evaluate(
                "(s) => { const g = document.querySelector('.js-plotly-plot');"
                " if (!g || !g.calcdata) return null;"
                " return g.calcdata.filter(cd => String(cd[0].trace.name).includes(s))"
                "   .reduce((n, cd) => n + cd.length, 0) }",
                suffix,
            )
            shot(page, "05-degradation")
            assert isinstance(n_points, int) and before <= n_points <= logged() and n_points > 0, (
                n_points,
                before,
                logged(),
            )
            browser.close()
    finally:
        for info in jobs.active_runs(store):
            try:
                jobs.cancel(store, info["id"])
            except Exception:
                pass
        server.stop()
        deadline = time.time() + 20
        while jobs.active_runs(store) and time.time() < deadline:
            time.sleep(0.5)
    assert time.time() - t0 < 180


def test_bundled_reference_runs_fill_an_empty_lab(tmp_path):
    """A teacher's first visit: no runs yet, and Degradation already shows the bundled
    reference curves, labelled as such."""
    from resnet_core.reference import list_sets

    sets = [s for s in list_sets(ROOT / "reference") if not s.error and s.run_ids()]
    if not sets:
        pytest.skip("no reference set is bundled")
    T0[0] = time.time()
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    server = Server(
        runs_dir, tmp_path / "streamlit.log", env={"RESNET_LAB_REFERENCE_DIR": str(ROOT / "reference")}
    ).start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{server.url}/degradation")
            wait_app(page, "Degradation")
            page.get_by_text("bundled reference runs").first.wait_for()
            page.locator(".legendtext", has_text="ref · ").first.wait_for(timeout=30_000)
            names = page.evaluate(
                "() => { const g = document.querySelector('.js-plotly-plot');"
                " return g && g.data ? g.data.filter(t => t.showlegend !== false).map(t => t.name) : [] }"
            )
            shot(page, "10-degradation-references")
            # one legend entry per experiment: a model's seeds are drawn as one mean curve
            want = len({r["model"] for r in sets[0].meta["runs"]})
            assert len([n for n in names if n.startswith("ref · ")]) == want, names
            page.goto(f"{server.url}/runs")
            wait_app(page, "Runs")
            page.get_by_text(sets[0].title).first.wait_for()
            shot(page, "11-runs-references")
            browser.close()
    finally:
        server.stop()
