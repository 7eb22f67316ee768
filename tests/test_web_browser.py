"""The page in a real headless browser (Debian's chromium driven by Playwright): ``blobnet web`` is
started as a person would start it, a whole round is played by clicking the legal bids and cards
(and some illegal ones, which the page refuses with the rules' reason), the model's numbers are
toggled on, and the score the page shows is checked against the rules engine replaying the same
deal and moves. A screenshot of the finished round is saved in the test's tmp dir.

Without chromium the test is skipped, unless BLOBNET_REQUIRE_BROWSER is set (CI sets it): then a
missing browser fails the test instead of hiding it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from blobnet.checkpoint import save_checkpoint
from blobnet.net import make_net
from blobnet.rules import Round

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = bool(os.environ.get("BLOBNET_REQUIRE_BROWSER"))

if CHROMIUM is None:
    if REQUIRED:
        pytest.fail("BLOBNET_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
    pytest.skip(
        "no chromium on this machine (set BLOBNET_REQUIRE_BROWSER to make this a failure)", allow_module_level=True
    )

from playwright.sync_api import Page, sync_playwright  # noqa: E402  (only once a browser is known to exist)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """``blobnet web`` with a tiny fresh model for the hints, on a free port; its URL."""
    model = tmp_path / "tiny.pt"
    save_checkpoint(model, preset="tiny", model=make_net("tiny", seed=0).state_dict())
    port = free_port()
    cmd = [sys.executable, "-m", "clients.cli", "web", "--port", str(port), "--seed", "5",
           "--model", f"{model}:dets=2,sims=8"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/config", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read() if proc.stdout else ""
                    raise RuntimeError(f"blobnet web did not start: {out}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0  # SIGTERM is a clean stop


def wait_for_turn(page: Page) -> str:
    page.wait_for_function("['your-turn', 'round-over', 'over'].includes(document.body.dataset.state)")
    return str(page.evaluate("document.body.dataset.state"))


def test_a_person_plays_a_whole_round_in_the_browser(server: str, tmp_path: Path):
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        page.set_default_timeout(20_000)
        page.goto(f"{server}/?delay=0")
        page.wait_for_function("document.body.dataset.state === 'setup'")
        page.select_option("#players", "4")
        page.fill("#cards", "5")
        page.click("#deal")
        refused = clicks = 0
        while wait_for_turn(page) == "your-turn":
            page.check("#hints-toggle")
            legal = page.locator("#bids button.legal, #hand button.legal")
            assert page.locator("#hints table.numbers tr").count() == 1 + legal.count()  # a row per legal move
            illegal = page.locator("#hand button.card:not(.legal)")
            if illegal.count():  # a card while bidding, or one that does not follow suit
                illegal.first.click()
                page.wait_for_selector("#message.error")
                bidding = page.locator("#bids button").count() > 0
                reason = "during bidding" if bidding else "it must follow"
                assert "Not allowed: you may not play" in page.inner_text("#message")
                assert reason in page.inner_text("#message")
                refused += not bidding
            legal.first.click()
            clicks += 1
        assert clicks == 1 + 5 and refused >= 1  # a bid and five cards; seed 5 deals follow-suit turns

        shown = [int(page.inner_text(f"#result td.points[data-seat='{s}']")) for s in range(4)]
        game = page.get_attribute("#table", "data-game")
        record = page.request.get(f"{server}/api/games/{game}/replay").json()
        r = Round.deal(players=4, cards=5, trump=record["trump"], dealer=record["dealer"], hands=record["hands"])
        for _, action in record["moves"]:
            r.play(action)
        assert shown == r.scores()
        assert page.locator("#replay .replay-step").count() == 1 + 5  # the bids, then five tricks
        assert page.locator("#replay details table.numbers").count() == 6  # the model's numbers at each decision
        page.screenshot(path=str(tmp_path / "round.png"), full_page=True)
        browser.close()
    assert (tmp_path / "round.png").stat().st_size > 10_000
