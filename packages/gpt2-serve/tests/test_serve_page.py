"""The chat page in a real headless browser (Debian's chromium through Playwright): the model's name, a
message typed and a streamed reply, stop and new chat. Skips where no browser is installed.

The screenshot is written to ``test-artifacts/serve-chat.png`` at the repository root (or
``$GPT2_TEST_ARTIFACTS``), kept after the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(
    os.environ.get("GPT2_TEST_ARTIFACTS", Path(__file__).resolve().parents[3] / "test-artifacts")
)


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.fixture(scope="module")
def page(serve, make_paced_chat_model) -> Iterator[tuple[Any, Any]]:
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = find_chromium()
    if executable is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's)")
    model = make_paced_chat_model(block_size=512)  # room for a conversation
    with serve(model) as server, sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except sync_api.Error as e:
            pytest.skip(f"{executable} does not start headless here: {str(e).splitlines()[0]}")
        try:
            tab = browser.new_page(viewport={"width": 900, "height": 600})
            tab.set_default_timeout(120_000)  # a busy machine is slow, not broken
            tab.goto(server.url + "/")
            yield tab, server
        finally:
            browser.close()


REPLY = "document.querySelectorAll('.msg.assistant')[{}]?.textContent.length ?? 0"


def test_a_message_gets_a_streamed_reply_and_stop_ends_it(page: tuple[Any, Any]) -> None:
    tab, server = page
    pacer = server.model.pacer
    tab.wait_for_function(f"document.getElementById('model').textContent === '{server.name}'")
    try:
        pacer.allow(6)  # the prompt and five tokens, then the reply waits
        tab.fill("#input", "Hello, who are you?")
        tab.press("#input", "Enter")
        tab.wait_for_selector(".msg.user")
        assert tab.inner_text(".msg.user") == "Hello, who are you?"
        tab.wait_for_function(f"{REPLY.format(0)} > 0")
        first = tab.evaluate(REPLY.format(0))
        pacer.allow(20)
        tab.wait_for_function(f"{REPLY.format(0)} > {first}")  # it grows piece by piece
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / "serve-chat.png"))
        assert (ARTIFACTS / "serve-chat.png").stat().st_size > 1000
        assert tab.locator("#stop").is_enabled()  # the reply is still going: it waits on the pacer
        tab.click("#stop")
        tab.wait_for_function("document.getElementById('stop').disabled")
    finally:
        pacer.allow(None)
    assert tab.locator(".error").count() == 0  # stopping is not an error
    assert tab.evaluate(REPLY.format(0)) > 0  # the partial reply stays


def test_the_conversation_is_kept_until_a_new_chat(page: tuple[Any, Any]) -> None:
    tab, server = page
    pacer = server.model.pacer
    try:
        pacer.allow(6)
        tab.fill("#input", "Tell me more.")
        tab.click("#send")
        tab.wait_for_function(f"{REPLY.format(1)} > 0")
        assert tab.locator(".msg.user").count() == 2
        assert tab.locator("#stop").is_enabled()
        tab.click("#new")
        assert tab.locator(".msg").count() == 0
        tab.wait_for_function("document.getElementById('stop').disabled")  # new chat stopped the reply
    finally:
        pacer.allow(None)
    assert tab.locator(".error").count() == 0
