"""Dashboard latency in a real browser: from an input to the updated value on screen.

Starts ``streamlit run app/main.py`` on a model and store (default: the default
SARM and its store, built by ``sarm build-default``), drives Debian's chromium
with playwright and measures three interactions, each from the input to the
moment the new value is drawn and the script run has finished:

- ``slider_update_ms``: a Head editor weight slider moved one step from the
  keyboard, until the "Reward (edited)" metric shows the new reward (the issue's
  "from input to the updated value on screen"); ``slider_settled_ms`` goes on
  until the whole fragment (store metrics, charts, flipped pairs) is redrawn;
- ``feature_first_open_ms``: a feature id typed on the Features page, for
  features not opened before in this server, until its page is drawn;
- ``page_switch_ms``: a click in the page navigation, until the new page is drawn.

Usage: ``python benchmarks/dashboard_latency.py [--model M --store S] [--repeats 7]``;
the last line is ``slider_update_ms=<x> slider_settled_ms=<s> feature_first_open_ms=<y>
page_switch_ms=<z>`` (medians). Latencies depend on the machine: compare runs on the same machine and store.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feature_store import FeatureStore  # noqa: E402
from sarm import cachedir  # noqa: E402
from sarm.constants import DEFAULT_MODEL  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 180_000
# navigation label -> the page's title (its heading)
SWITCHES = [
    ("Explain a score", "Explain a score"),
    ("Features", "Features"),
    ("Audit", "Audit"),
    ("Compare a pair", "Compare a pair"),
    ("Overview", "SARM dashboard"),
]
# the run has finished: the app says so and no element is stale
FINISHED = (
    "(() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
    " return app && app.getAttribute('data-test-script-state') === 'notRunning'"
    " && !document.querySelector('[data-stale=\"true\"]'); })()"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="SARM (default: the default SARM)")
    p.add_argument("--store", default=None, help="feature store (default: the default store)")
    p.add_argument("--repeats", type=int, default=7, help="measurements per interaction")
    p.add_argument("--chromium", default=os.environ.get("SARM_CHROMIUM", CHROMIUM))
    args = p.parse_args(argv)
    if args.store is None:
        if args.model != DEFAULT_MODEL:
            p.error("give --store with --model")
        args.store = str(cachedir.default_store_path())
    if not Path(args.store).is_file():
        p.error(f"no store at {args.store} (build it: sarm build-default, or give --store)")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, store: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true"]
    cmd += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    cmd += ["--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    env = {**os.environ, "SARM_MODEL": model, "SARM_STORE": store, "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"streamlit did not start in 120 s:\n{log.read_text()[-3000:]}")


def finished(tab) -> None:
    tab.wait_for_function(FINISHED, timeout=TIMEOUT_MS)


def timed(tab, act, done: str, arg=None) -> float:
    """Milliseconds from ``act()`` until the JS predicate ``done(arg)`` and the run finished."""
    return timed_steps(tab, act, done, arg)[1]


def timed_steps(tab, act, done: str, arg=None) -> tuple[float, float]:
    """Milliseconds from ``act()`` until ``done(arg)`` holds, then until the run finished too."""
    start = time.perf_counter()
    act()
    tab.wait_for_function(f"a => ({done})(a)", arg=arg, timeout=TIMEOUT_MS, polling="raf")
    shown = time.perf_counter()
    tab.wait_for_function(f"a => ({done})(a) && {FINISHED}", arg=arg, timeout=TIMEOUT_MS)
    return (shown - start) * 1000, (time.perf_counter() - start) * 1000


def heading(tab, title: str) -> None:
    tab.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    finished(tab)


HAS_HEADING = (
    "t => [...document.querySelectorAll('h1, h2')].some(h => h.innerText.trim() === t"
    " && !h.closest('[data-stale=\"true\"]'))"
)
METRIC_CHANGED = (
    "v => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
    ".find(e => e.innerText.includes('Reward (edited)'));"
    " const x = m && m.querySelector('[data-testid=\"stMetricValue\"]');"
    " return x && x.innerText !== v; }"
)


def page_switches(tab, url: str, repeats: int) -> list[float]:
    tab.goto(url, wait_until="domcontentloaded")
    heading(tab, "SARM dashboard")
    for label, title in SWITCHES:  # each page once, so the store's caches are warm
        tab.get_by_role("link", name=label, exact=True).first.click()
        heading(tab, title)
    times = []
    for i in range(repeats):
        label, title = SWITCHES[i % len(SWITCHES)]
        link = tab.get_by_role("link", name=label, exact=True).first
        times.append(timed(tab, link.click, HAS_HEADING, title))
    return times


def unopened_features(store: str, n: int) -> list[int]:
    with FeatureStore.open(store, read_only=True) as fs:
        frame = fs.features(order_by="frequency", limit=max(4 * n, 50))
    ids = [int(f) for f in frame["feature_id"]]
    return ids[len(ids) // 2 :][:n]  # skip the first ones (the page opens the top feature)


def feature_opens(tab, url: str, fids: list[int]) -> list[float]:
    tab.goto(f"{url}/features", wait_until="domcontentloaded")
    heading(tab, "Features")
    finished(tab)
    box = tab.get_by_label("Feature id", exact=True)
    times = []
    for fid in fids:
        box.fill(str(fid))
        times.append(
            timed(
                tab,
                lambda: box.press("Enter"),
                "t => [...document.querySelectorAll('h2')].some(h => (h.innerText.trim() === t"
                " || h.innerText.startsWith(t + ':'))"
                " && !h.closest('[data-stale=\"true\"]'))",
                f"Feature {fid}",
            )
        )
    return times


def slider_moves(tab, url: str, repeats: int) -> list[tuple[float, float]]:
    tab.goto(f"{url}/editor", wait_until="domcontentloaded")
    heading(tab, "Head editor")
    tab.get_by_role("button", name="Add this example's top 5 contributors").click()
    thumb = tab.locator('input[type="range"][aria-label^="weight of f"]').first
    thumb.wait_for(state="attached", timeout=TIMEOUT_MS)
    finished(tab)
    value = tab.locator('[data-testid="stMetric"]').filter(has_text="Reward (edited)")
    value = value.locator('[data-testid="stMetricValue"]')
    times = []
    for i in range(repeats + 1):  # the first move is a warm-up
        before = value.inner_text()
        thumb = tab.locator('input[type="range"][aria-label^="weight of f"]').first
        thumb.focus()
        key = "ArrowRight" if i % 2 == 0 else "ArrowLeft"
        ms = timed_steps(tab, lambda k=key: tab.keyboard.press(k), METRIC_CHANGED, before)
        if i:
            times.append(ms)
    return times


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    fids = unopened_features(args.store, args.repeats)  # read before the server opens it
    log = Path(tempfile.mkdtemp(prefix="sarm-latency-")) / "streamlit.log"
    proc, url = start_server(args.model, args.store, log)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=args.chromium, args=["--no-sandbox", "--headless=new"]
            )
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            switch = page_switches(tab, url, args.repeats)
            opens = feature_opens(tab, url, fids)
            slider = slider_moves(tab, url, args.repeats)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    shown, settled = [s for s, _ in slider], [s for _, s in slider]
    print(f"model={args.model} store={args.store} repeats={args.repeats} cpus={os.cpu_count()}")
    for name, times in (
        ("slider (value shown)", shown),
        ("slider (settled)", settled),
        ("feature", opens),
        ("switch", switch),
    ):
        print(f"{name}: " + " ".join(f"{t:.0f}" for t in times) + " ms")
    print(
        f"slider_update_ms={statistics.median(shown):.0f} "
        f"slider_settled_ms={statistics.median(settled):.0f} "
        f"feature_first_open_ms={statistics.median(opens):.0f} "
        f"page_switch_ms={statistics.median(switch):.0f}"
    )


if __name__ == "__main__":
    main()
