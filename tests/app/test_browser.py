"""The dashboard in a real browser: `streamlit run app/main.py` driven by Debian's chromium.

Skips when chromium or playwright is missing, unless SARM_REQUIRE_BROWSER=1 (CI),
where it fails instead. Screenshots go to screenshots/ (or $SARM_SCREENSHOTS).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from app_env import build_app_env, copy_store
from playwright.sync_api import sync_playwright

from app.core import load_dataset, selectivity_text
from feature_store import FeatureStore
from sarm.audit import misranked_pairs
from sarm.head import Head
from sarm.interventions import parse_actions
from workflows.shift import prepare_shift

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL = ("127.0.0.1", "localhost")
# url path, title, minimum number of rendered Plotly charts
PAGES = [
    ("", "SARM dashboard", 0),
    ("explain", "Explain a score", 2),
    ("compare", "Compare a pair", 1),
    ("features", "Features", 1),
    ("editor", "Head editor", 2),
    ("shift", "Preference shift", 2),
    ("export", "Export the head", 0),
    ("audit", "Audit", 3),
    ("add_data", "Add data", 0),
    ("bias", "Bias audit", 0),
]


def missing(reason: str):
    if os.environ.get("SARM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SARM_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("SARM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        missing("chromium is not installed (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("the playwright package is not installed (pip install playwright)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(chromium, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "app-env"
    root.mkdir(exist_ok=True)
    env = build_app_env(root)
    store = copy_store(env, tmp_path_factory.mktemp("browser") / "store.duckdb")
    copy_store(
        env, store.with_name("reference.duckdb")
    )  # for the test process: the server locks its copy
    port = free_port()
    log = tmp_path_factory.mktemp("browser-log") / "streamlit.log"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app/main.py",
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    environ = {
        **os.environ,
        "SARM_MODEL": str(env.model_dir),
        "SARM_STORE": str(store),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url, store.with_name("reference.duckdb")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not become healthy in {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def page(chromium, server):

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield tab
        browser.close()


def shots_dir() -> Path:
    out = Path(os.environ.get("SARM_SCREENSHOTS", ROOT / "screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def settle(tab, title: str, n_charts: int) -> None:
    """Wait until the page's title and charts are drawn and the script has finished."""
    tab.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=90_000)
    if n_charts:
        tab.wait_for_function(
            "n => document.querySelectorAll('.js-plotly-plot .main-svg').length >= n",
            arg=n_charts,
            timeout=90_000,
        )
    tab.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=90_000
    )
    tab.wait_for_timeout(500)


def screenshot(tab, name: str) -> Path:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit."""
    height = tab.evaluate(
        "() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
        " return m ? m.scrollHeight : document.body.scrollHeight; }"
    )
    size = tab.viewport_size
    tab.set_viewport_size({"width": size["width"], "height": int(min(max(height, 600), 8000))})
    tab.wait_for_timeout(800)
    path = shots_dir() / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    tab.set_viewport_size(size)
    return path


def assert_no_exception(tab, where: str) -> None:
    boxes = tab.locator('[data-testid="stException"]')
    assert boxes.count() == 0, f"{where}: {boxes.first.inner_text()}"


def test_every_page_in_chromium(page, server):
    server, _ = server
    outside: list[str] = []

    def note(request) -> None:
        host = urllib.parse.urlsplit(request.url).hostname
        if request.url.split(":", 1)[0] in ("http", "https", "ws", "wss") and host not in LOCAL:
            outside.append(request.url)

    page.on("request", note)
    try:
        for path, title, n_charts in PAGES:
            page.goto(f"{server}/{path}", wait_until="domcontentloaded")
            settle(page, title, n_charts)
            assert_no_exception(page, path or "overview")
            charts = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot')
            assert charts.count() >= n_charts, f"{path}: {charts.count()} charts"
            screenshot(page, path or "overview")
    finally:
        page.remove_listener("request", note)
    assert not outside, f"requests outside the server (favicon, fonts, ...): {outside}"


def test_a_copied_link_opens_the_same_feature(page, server):
    server, reference = server
    with FeatureStore.open(reference, read_only=True) as store:
        first = int(store.features(order_by="abs_contribution", limit=1)["feature_id"][0])
    fid = 3 if first != 3 else 4
    page.goto(f"{server}/features?feature={fid}", wait_until="domcontentloaded")
    settle(page, "Features", 0)
    page.get_by_role("heading", name=f"Feature {fid}").first.wait_for(timeout=60_000)
    assert f"feature={fid}" in page.url
    assert f"/features?feature={fid}" in page.locator('[data-testid="stCode"]').first.inner_text()
    assert_no_exception(page, "features from a link")


def test_editor_slider_moves_the_reward(page, server):
    server, _ = server
    page.goto(f"{server}/editor", wait_until="domcontentloaded")
    settle(page, "Head editor", 2)
    page.get_by_role("button", name="Add this example's top 5 contributors").click()
    thumb = page.locator('input[type="range"][aria-label^="weight of f"]').first
    thumb.wait_for(state="attached", timeout=60_000)
    edited = page.locator('[data-testid="stMetric"]').filter(has_text="Reward (edited)")
    before = edited.locator('[data-testid="stMetricValue"]').inner_text()
    base, step = float(thumb.input_value()), float(thumb.get_attribute("step"))
    thumb.focus()
    page.keyboard.press("ArrowRight")  # one step: from the base weight, not to a round number
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stSidebar\"]').innerText.includes('1 edit')",
        timeout=60_000,
    )
    settle(page, "Head editor", 2)
    thumb = page.locator('input[type="range"][aria-label^="weight of f"]').first
    assert float(thumb.input_value()) == pytest.approx(base + step, abs=1e-6)
    before = edited.locator('[data-testid="stMetricValue"]').inner_text()
    thumb.focus()
    page.keyboard.press("Home")  # the slider's minimum: a large weight change
    page.wait_for_function(
        "v => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
        ".find(e => e.innerText.includes('Reward (edited)'));"
        " return m && !m.innerText.includes(v); }",
        arg=before,
        timeout=60_000,
    )
    settle(page, "Head editor", 2)
    assert_no_exception(page, "editor after a slider move")
    assert "1 edit" in page.locator('[data-testid="stSidebar"]').inner_text()
    screenshot(page, "editor-edited")


def test_clicking_a_misranked_row_opens_it_in_compare(page, server):

    server, reference = server
    with FeatureStore.open(reference, read_only=True) as store:
        data = load_dataset(store)
        weights, bias = store.head_weights()
    worst = misranked_pairs(Head(weights, bias).rewards(data.latents), data.index, data.frame).iloc[
        0
    ]
    page.goto(f"{server}/audit", wait_until="domcontentloaded")
    settle(page, "Audit", 3)
    grid = page.locator('[data-testid="stDataFrame"]').nth(1)  # 0 is the accuracy table
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 15, box["y"] + 35 + 17)  # the first row's selection cell
    settle(page, "Compare a pair", 1)
    assert_no_exception(page, "compare after a click in the audit")
    margin = page.locator('[data-testid="stMetric"]').filter(has_text="Margin")
    assert margin.locator('[data-testid="stMetricValue"]').inner_text() == f"{worst['margin']:+.6f}"
    screenshot(page, "compare-from-audit")


def test_audit_report_and_table_downloads_arrive_in_the_browser(page, server, tmp_path):
    """Downloads are made on click (deferred): the browser receives the files."""
    server, _ = server
    page.goto(f"{server}/audit", wait_until="domcontentloaded")
    settle(page, "Audit", 3)
    accuracy = page.locator('[data-testid="stMetric"]').filter(has_text="Pairwise accuracy")
    shown = accuracy.locator('[data-testid="stMetricValue"]').inner_text()
    with page.expect_download(timeout=60_000) as got:
        page.get_by_role("button", name="Download this audit as one HTML file").click()
    report = tmp_path / got.value.suggested_filename
    got.value.save_as(report)
    body = report.read_text(encoding="utf-8")
    assert report.suffix == ".html" and "<h1>SARM audit</h1>" in body
    assert f"<td>{shown}</td>" in body and body.count("Plotly.newPlot(") == 3
    with page.expect_download(timeout=60_000) as got:
        page.get_by_role("button", name="Download CSV").first.click()
    csv = tmp_path / got.value.suggested_filename
    got.value.save_as(csv)
    assert csv.name == "misranked_pairs.csv"
    assert csv.read_text(encoding="utf-8").splitlines()[0].startswith("pair,")
    assert_no_exception(page, "audit after the downloads")


def test_shift_page_draws_the_overlaid_histograms(page, server):

    server, reference = server
    with FeatureStore.open(reference, read_only=True) as store:
        subset = sorted(set(store.examples_frame()["subset"].dropna()))[0]
        shift = prepare_shift(f"subset:{subset}", "rest", store=store)
        top = shift.discover(limit=20)["feature_id"].head(5).astype(int).tolist()
        report = shift.evaluate(parse_actions(["scale:0.0"], top))
    page.goto(f"{server}/shift", wait_until="domcontentloaded")
    settle(page, "Preference shift", 2)
    assert_no_exception(page, "shift")
    hist = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first
    hist.scroll_into_view_if_needed()
    assert hist.locator(".subplot").count() >= 2  # a target and a complement panel
    assert hist.locator(".trace.bars").count() == 4  # before and after in each
    assert hist.locator(".point path").count() > 0  # and the bars are drawn
    selectivity = page.locator('[data-testid="stMetric"]').filter(has_text="Selectivity")
    shown = selectivity.locator('[data-testid="stMetricValue"]').inner_text()
    assert shown == selectivity_text(report.selectivity)[0]
    screenshot(page, "shift-histograms")


UPLOAD = [
    {
        "prompt": "Name a fruit.",
        "chosen": "An apple, sweet.",
        "rejected": "A chair.",
        "subset": "u",
    },
    {"prompt": "Say hi.", "chosen": "Hi there, friend!", "rejected": "No.", "subset": "u"},
    {"prompt": "Count to two.", "chosen": "One, two.", "rejected": "Three.", "subset": "u"},
    {"prompt": "Broken row without a rejected response.", "chosen": "Here."},
]


def test_uploaded_data_is_indexed_into_a_new_store_and_shown(page, server, tmp_path):
    server, _ = server
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in UPLOAD))
    page.goto(f"{server}/add_data", wait_until="domcontentloaded")
    settle(page, "Add data", 0)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(data))
    page.get_by_text("3 preference groups with 6 responses; 1 malformed row kept out").wait_for(
        timeout=90_000
    )
    page.get_by_role("heading", name="Rows kept out").wait_for()
    screenshot(page, "add-data-preview")
    page.get_by_label("Folder").fill(str(tmp_path / "stores"))
    page.get_by_role("button", name="Index", exact=True).click()
    switch = page.get_by_role("button", name="Switch the dashboard to mine.duckdb")
    switch.wait_for(timeout=300_000)  # the job ran in the background, its bar updating
    assert_no_exception(page, "add data, indexed")
    switch.click()
    page.wait_for_function(
        "() => { const s = document.querySelector('[data-testid=\"stSidebar\"]').innerText;"
        " return s.includes('mine.duckdb') && s.includes('6 responses'); }",
        timeout=90_000,
    )
    assert (tmp_path / "stores" / "mine.duckdb").is_file()
    page.get_by_role("link", name="Explain a score", exact=True).first.click()
    settle(page, "Explain a score", 2)
    assert_no_exception(page, "explain on the new store")
    texts = [row[k] for row in UPLOAD[:3] for k in ("chosen", "rejected")]
    page.wait_for_function(  # the example picker shows an uploaded response
        "texts => [...document.querySelectorAll('[data-testid=\"stSelectbox\"]')].some(b => {"
        " const s = b.textContent + [...b.querySelectorAll('input, [title]')]"
        ".map(i => (i.value || '') + (i.title || '')).join(' ');"
        " return s.includes('Example (') && texts.some(t => s.includes(t)); })",
        arg=texts,
        timeout=60_000,
    )
    screenshot(page, "explain-uploaded-data")
