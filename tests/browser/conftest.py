"""A real Datasette serving the demo incident, and Debian's Chromium driven by
Playwright's sync API.

These tests run in their own pytest invocation (``python -m pytest -q -m browser``):
sync Playwright refuses to start inside a running asyncio loop, so nothing here
uses pytest-asyncio.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DB_NAME = "demo"
LOCAL_HOSTS = ("127.0.0.1",)


@dataclass
class Server:
    base: str  # http://127.0.0.1:PORT
    token_url: str  # the one-time --root sign-in link
    db_path: Path
    secret: str
    name: str = DB_NAME
    stdout: list = field(default_factory=list, repr=False)

    @property
    def workbench(self) -> str:
        return f"{self.base}/{DB_NAME}/-/forensics"

    def root_cookie(self) -> dict:
        """A ds_actor cookie for root, signed like Datasette does (the token is one-time)."""
        from itsdangerous import URLSafeSerializer

        value = URLSafeSerializer(self.secret, "actor").dumps({"a": {"id": "root"}})
        return {"name": "ds_actor", "value": value, "url": self.base}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory):
    """``datasette serve demo.db --root`` on a free port, built by datasette_forensics.demo."""
    from datasette_forensics import demo, permissions

    tmp = tmp_path_factory.mktemp("browser-demo")
    db_path = tmp / f"{DB_NAME}.db"
    demo.build(str(db_path))
    settings = []  # --config and --metadata as this Datasette line reads them
    for option, content in permissions.serve_options(demo.config(DB_NAME), demo.metadata(DB_NAME)).items():
        path = tmp / f"{option.strip('-')}.json"
        path.write_text(json.dumps(content))
        settings += [option, str(path)]
    port = _free_port()
    secret = secrets.token_hex(16)
    env = dict(os.environ, DATASETTE_SECRET=secret, PYTHONUNBUFFERED="1")
    log = open(tmp / "datasette.stderr", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", str(db_path), "--host", "127.0.0.1",
         "--port", str(port), "--root", *settings],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env,
    )
    lines: list[str] = []

    def drain():  # uvicorn's access log also goes to stdout: keep the pipe from filling
        for line in process.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=drain, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"datasette exited with {process.returncode}: {(tmp / 'datasette.stderr').read_text()}")
            try:
                with urllib.request.urlopen(base + "/-/versions.json", timeout=1) as r:
                    if r.status == 200 and json.load(r)["datasette"]["version"]:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("datasette did not answer /-/versions.json within 30 s")
            time.sleep(0.1)
        token_url = next((line for line in lines if "/-/auth-token?token=" in line), None)
        assert token_url, f"no --root token URL on datasette's stdout: {lines}"
        assert token_url.startswith(base + "/-/auth-token?token="), token_url
        yield Server(base=base, token_url=token_url.strip(), db_path=db_path, secret=secret, stdout=lines)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


@pytest.fixture(scope="module")
def chromium_browser():
    """Debian's Chromium, headless (never ``playwright install``).

    Module scope: sync Playwright cannot be started twice at once, and other browser
    tests (tests/test_pages_browser.py) start their own after this module is done.
    """
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing and CI=true: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); the browser tests need it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Watch:
    """What must never happen on a page: a dialog, a console error, a foreign request."""

    def __init__(self):
        self.dialogs: list[str] = []
        self.console_errors: list[str] = []
        self.foreign_requests: list[str] = []
        self.failed_requests: list[str] = []
        self.expected_console: list[str] = []  # substrings of console errors a test provokes
        self.checked = False

    def expect_console_error(self, text: str):
        """A console error containing text is expected (a test provoking a 403, say)."""
        self.expected_console.append(text)

    def attach(self, page):
        page.on("dialog", self._dialog)
        page.on("console", lambda m: self._console(page, m))
        page.on("pageerror", lambda e: self.console_errors.append(f"{page.url}: {e}"))
        page.on("request", self._request)
        page.on("requestfailed", self._failed)
        return page

    def _console(self, page, message):
        if message.type == "error" and not any(t in message.text for t in self.expected_console):
            self.console_errors.append(f"{page.url}: {message.text}")

    def _dialog(self, dialog):
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    @staticmethod
    def _foreign(url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme in ("data", "about", "blob"):
            return False
        return parts.hostname not in LOCAL_HOSTS

    def _request(self, request):
        if self._foreign(request.url):
            self.foreign_requests.append(request.url)

    def _failed(self, request):
        if self._foreign(request.url):
            self.failed_requests.append(f"{request.url}: {request.failure}")

    def check(self):
        self.checked = True
        assert self.dialogs == [], f"a dialog fired: {self.dialogs}"
        assert self.foreign_requests == [], f"requests left 127.0.0.1: {self.foreign_requests}"
        assert self.failed_requests == [], f"failed requests: {self.failed_requests}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"


@pytest.fixture
def watch():
    """Every page a test opens reports here; the test fails if anything fired."""
    w = Watch()
    yield w
    if not w.checked:
        w.check()


@pytest.fixture
def new_page(chromium_browser, watch):
    """new_page(context=None): a watched page, in a fresh context (its own cookies) unless given one."""
    contexts = []

    def make(context=None):
        if context is None:
            context = chromium_browser.new_context(viewport={"width": 1280, "height": 900})
            contexts.append(context)
        return watch.attach(context.new_page())

    yield make
    for context in contexts:
        context.close()
