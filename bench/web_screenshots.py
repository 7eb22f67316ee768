"""Screenshots of ``blobnet web`` for the README: a game in progress and a training run, live.

    python -m bench.web_screenshots [--out docs] [--model runs/default/best.pt] [--browser PATH]

Starts ``blobnet web`` as a person would and drives Debian's chromium with Playwright (the system
browser: ``--browser``, default the chromium on PATH). Writes two files into ``--out``:

- ``web-game.png``: a 4-player game against the model (``--model``, default runs/default/best.pt
  when it exists, else a tiny fresh network) in every other seat, the model's numbers toggled on,
  a few of the person's decisions in (the person plays the model's choice).
- ``web-run.png``: a tiny real ``blobnet train`` (the tiny network, short iterations) started in a
  temporary directory and shown by ``blobnet web --run`` while it runs, once five iterations are in.

It takes a minute or two on the 2-core machine, most of it the training run.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright

from blobnet.checkpoint import save_checkpoint
from blobnet.net import make_net

ROOT = Path(__file__).resolve().parent.parent
VIEWPORT: ViewportSize = {"width": 1100, "height": 860}
# A training run small enough to finish iterations every few seconds on a CPU: the tiny network,
# a short search, a few dozen rounds of self-play and of each arena match, no warm start.
TINY_RUN = [
    "network.preset=tiny", "search.dets=2", "search.sims=8", "train.iterations=12", "train.rounds_per_iteration=96",
    "train.steps_per_iteration=40", "train.batch_size=256", "train.workers=1", "train.concurrency=32",
    "train.warm_start_rounds=0", "train.warm_start_steps=0", "arena.rounds=40", "arena.final_rounds=0",
    "arena.concurrency=32",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def web(*args: str) -> Iterator[str]:
    """``blobnet web ARGS`` on a free port, stopped on leaving; yields its URL once it answers."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "clients.cli", "web", "--port", str(port), *args], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/config", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"blobnet web {' '.join(args)} did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait_for_turn(page: Page) -> str:
    page.wait_for_function("['your-turn', 'round-over', 'over'].includes(document.body.dataset.state)")
    return str(page.evaluate("document.body.dataset.state"))


def game_shot(browser: Browser, model: str, out: Path) -> None:
    """A game against the model, hints on, shot at the person's turn after two tricks."""
    with web("--seed", "11", "--model", model, "--opponent", model) as url:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{url}/?delay=0")
        page.wait_for_function("document.body.dataset.state === 'setup'")
        page.select_option("#mode", "game")
        for select in page.locator("#opponents select").all():
            select.select_option(model)
        page.click("#deal")
        _wait_for_turn(page)
        page.check("#hints-toggle")
        # 4 bids and two tricks of 4 cards shown: the person's turn in the third trick
        while _wait_for_turn(page) == "your-turn" and page.locator("#log li").count() < 12:
            page.locator("#bids button.choice, #hand button.choice").first.click()
        page.screenshot(path=str(out / "web-game.png"))
        page.close()


def run_shot(browser: Browser, out: Path) -> None:
    """A tiny training run, shot once its fifth iteration is in the curves."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "tiny-run"
        sets = [a for s in TINY_RUN for a in ("--set", s)]
        train = subprocess.Popen([sys.executable, "-m", "clients.cli", "train", "--run-dir", str(run), *sets],
                                 cwd=ROOT)  # fmt: skip
        try:
            while not run.is_dir():
                if train.poll() is not None:
                    raise RuntimeError("blobnet train stopped before making its run directory")
                time.sleep(0.2)
            with web("--run", str(run)) as url:
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(f"{url}/#run")
                page.set_default_timeout(300_000)
                page.wait_for_function("document.querySelector('#run-arena h3')?.textContent.includes('iteration 5')")
                page.wait_for_function("document.querySelector('#run-status').dataset.phase === 'self-play'")
                time.sleep(1.5)  # a little progress into the iteration, for the bar
                page.screenshot(path=str(out / "web-run.png"), full_page=True)
                page.close()
        finally:
            train.terminate()
            train.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.web_screenshots", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs", help="folder for web-game.png and web-run.png")
    p.add_argument("--model", help="the checkpoint to play against (default: runs/default/best.pt, else a tiny one)")
    p.add_argument("--browser", default=shutil.which("chromium"), help="the chromium binary")
    args = p.parse_args(argv)
    if not args.browser:
        raise SystemExit("no chromium found: apt-get install chromium, or give --browser PATH")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None and (ROOT / "runs/default/best.pt").is_file():
            model = "runs/default/best.pt"
        if model is None:
            model = str(Path(tmp) / "tiny.pt")
            save_checkpoint(model, preset="tiny", model=make_net("tiny", seed=0).state_dict())
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.browser, headless=True, args=["--no-sandbox"])
            try:
                game_shot(browser, model, out)
                run_shot(browser, out)
            finally:
                browser.close()
    print(f"wrote {out / 'web-game.png'} and {out / 'web-run.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
