"""The workbench in a real browser: charts drawn by datasette-vega with no network
beyond this server, and no hostile log string ever executed.

Run on their own: ``python -m pytest -m browser tests/test_pages_browser.py``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import import_or_skip_unless_ci, skip_unless_ci
from test_pages import build

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if CHROMIUM is None:
        skip_unless_ci("no Chromium (apt-get install chromium)")
    import_or_skip_unless_ci("playwright", "pip install playwright")
    tmp = tmp_path_factory.mktemp("browser")
    build(tmp / "ws.db", tmp)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "datasette", str(tmp / "ws.db"), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/-/versions.json", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield base
    process.terminate()
    process.wait(10)


@pytest.mark.parametrize("page,charts", [("", 2), ("/ips", 1), ("/user-agents", 1), ("/orgs", 1), ("/orgs/1", 1)])
def test_charts_draw_and_nothing_executes(server, page, charts):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page()
        dialogs, errors, foreign = [], [], []
        tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.on("request", lambda r: None if r.url.startswith((server, "data:")) else foreign.append(r.url))
        tab.goto(server + "/ws/-/forensics" + page, wait_until="networkidle")
        frames = [f for f in tab.frames if "/-/forensics-chart" in f.url]
        assert len(frames) == charts
        for frame in frames:
            frame.wait_for_selector("svg .mark-rect path, canvas", timeout=10_000)
            bars = frame.evaluate("document.querySelectorAll('svg .mark-rect path').length")
            assert bars > 0 or frame.evaluate("document.querySelectorAll('canvas').length") > 0
        assert dialogs == [] and errors == [] and foreign == []
        # The hostile user agent is on the page as text.
        assert "<script>alert(1)</script>" in tab.inner_text("body")
        browser.close()
