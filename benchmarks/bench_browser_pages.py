"""How long each app page takes to be ready in a real browser (goal: at most 2 s).

    python benchmarks/bench_browser_pages.py [--rounds 3] [--app DIR] [--screenshots DIR]
                                             [--present]

Starts ``streamlit run app/main.py`` (of the repository at ``--app``, default this one) on a
free port, on an empty run store (so the pages show the bundled reference runs), and opens
the first page once: the server imports torch and the app then, a cost paid once per server
process, reported apart. Then, for each page and each of ``--rounds`` rounds, it times:

- first visit: a new browser session (a new context: no cache, no cookies) opening the page;
- repeat visit: the same session opening the page again.

"Ready" is what Streamlit's own browser tests wait for: the app connected
(``[data-testid="stApp"]`` with data-test-connection-state="CONNECTED"), the script done
(data-test-script-state="notRunning"), the page's title drawn and no ``stSkeleton`` left.
Prints each page's median of each; chromium at /usr/bin/chromium (Playwright drives it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# (url path, title on the page): st.navigation names each page after its file
PAGES = [
    ("", "Lab"),
    ("degradation", "Degradation"),
    ("runs", "Runs"),
    ("responses", "Layer responses"),
    ("gradients", "Gradient flow"),
    ("activations", "Activations"),
    ("embeddings", "Embeddings"),
    ("studies", "Studies"),
    ("tour", "Tour"),
]
READY_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app) return false;
  if (app.getAttribute('data-test-connection-state') !== 'CONNECTED') return false;
  if (app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-testid="stSkeleton"]')) return false;
  return !!document.querySelector('[data-testid="stMainBlockContainer"] h1');
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app: Path, runs_dir: Path, log: Path, port: int) -> subprocess.Popen:
    env = dict(
        os.environ,
        RESNET_LAB_RUNS_DIR=str(runs_dir),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(app / "app" / "main.py"),
                "--server.port",
                str(port),
                "--server.headless",
                "true",
                "--server.address",
                "127.0.0.1",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=str(app),
            env=env,
            stdout=f,
            stderr=f,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError(f"streamlit did not answer in 120 s: {log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def visit(page, url: str, timeout_ms: int = 120_000) -> float:
    """Seconds from navigation to ready."""
    t = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.wait_for_function(READY_JS, timeout=timeout_ms, polling=50)
    return time.perf_counter() - t


def run(args) -> int:
    from playwright.sync_api import sync_playwright

    app = Path(args.app).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    runs_dir = tmp / "runs"
    runs_dir.mkdir()
    log = tmp / "server.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    shots = Path(args.screenshots) if args.screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    query = "?present=1" if args.present else ""
    t0 = time.perf_counter()
    proc = start_server(app, runs_dir, log, port)
    print(f"app: {app}; store: {runs_dir} (empty); server up in {time.perf_counter() - t0:.1f} s", flush=True)
    first, repeat = {p: [] for p, _ in PAGES}, {p: [] for p, _ in PAGES}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ctx = browser.new_context(viewport={"width": 1400, "height": 900})
            t = visit(ctx.new_page(), f"{base}/{query}", timeout_ms=300_000)
            ctx.close()
            print(f"the server's first page (imports torch and the app once): {t:.2f} s", flush=True)
            for r in range(args.rounds):
                for path, title in PAGES:
                    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
                    pg = ctx.new_page()
                    first[path].append(visit(pg, f"{base}/{path}{query}"))
                    repeat[path].append(visit(pg, f"{base}/{path}{query}"))
                    print(
                        f"  round {r + 1} {title}: first {first[path][-1]:.2f} s, repeat "
                        f"{repeat[path][-1]:.2f} s",
                        flush=True,
                    )
                    if shots and r == args.rounds - 1:
                        pg.wait_for_timeout(1500)  # plotly draws after the script is done
                        pg.screenshot(
                            path=str(shots / f"{path or 'lab'}{'-present' if query else ''}.png"),
                            full_page=True,
                        )
                    ctx.close()
            browser.close()
    finally:
        stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'page':<18}{'first visit (s)':>16}{'repeat visit (s)':>18}   (medians of {args.rounds})")
    worst = 0.0
    for path, title in PAGES:
        f, rp = statistics.median(first[path]), statistics.median(repeat[path])
        worst = max(worst, f, rp)
        print(f"{title:<18}{f:>16.2f}{rp:>18.2f}")
    print(f"slowest: {worst:.2f} s (goal: at most 2 s)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="visits per page (medians reported)")
    ap.add_argument("--app", default=str(ROOT), help="repository whose app/main.py to serve")
    ap.add_argument("--screenshots", help="save each page's last first-visit screenshot here")
    ap.add_argument("--present", action="store_true", help="open every page with ?present=1")
    a = ap.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        print(f"{CHROMIUM} is missing (apt-get install chromium)", file=sys.stderr)
        return 2
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
