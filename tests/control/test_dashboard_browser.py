"""The dashboard in a real headless browser (Debian's chromium and its driver).

nfork runs as the real twistd with threaded backends and traffic flowing;
the page is driven as an operator would: it shows the inbound and live
counters, a shadow is activated through its button and the confirmation,
an API error is shown with the API's message, and with a token the page
asks for it.  Screenshots are written to the test's directory, and also to
C{$NFORK_SCREENSHOTS} when set (C{NFORK_SCREENSHOTS=docs/images} refreshes
the documentation's).
"""

from __future__ import annotations

import http.client
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.backends import ThreadedBackend
from tests.support.configs import inbound_json, write_config
from tests.support.control_api import control_port, control_request
from tests.support.process import TwistdProcess

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed"
)
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TOKEN = "dashboard-token-0123456789"
NO_VALUE = "\u2013"
"""What the page shows for a figure without data (an en dash)."""
WAIT = 8.0
"""Seconds the page is given to show a change (it refreshes every second)."""


def _browser_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless chromium at 1280x800; quit after the test."""
    paths = _browser_paths()
    if paths is None:
        pytest.skip(
            "chromium and chromedriver are not installed "
            "(apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,800",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=paths[1])
    )
    try:
        driver.set_page_load_timeout(10)
        yield driver
    finally:
        driver.quit()


request = control_request


class Traffic:
    """Requests to an inbound from a thread, about 100 a second, bounded."""

    def __init__(self, port: int, limit: int = 3000) -> None:
        self.sent = 0
        self._port = port
        self._limit = limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=5)
        try:
            while not self._stop.is_set() and self.sent < self._limit:
                connection.request("GET", f"/items/{self.sent % 7}")
                connection.getresponse().read()
                self.sent += 1
                self._stop.wait(0.01)
        finally:
            connection.close()


def until(driver: WebDriver, condition: Callable[[], Any], what: str) -> Any:
    """C{condition()}'s first true value within L{WAIT} seconds."""
    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(
        lambda _: condition(), message=f"the page did not show {what} in {WAIT}s"
    )


def outbound_card(driver: WebDriver, inbound: str, outbound: str) -> WebElement:
    return driver.find_element(
        By.CSS_SELECTOR,
        f'[data-inbound="{inbound}"] [data-outbound="{outbound}"]',
    )


def figure(driver: WebDriver, inbound: str, outbound: str, name: str) -> str:
    card = outbound_card(driver, inbound, outbound)
    return str(card.find_element(By.CSS_SELECTOR, f'[data-figure="{name}"]').text)


def classes(element: WebElement) -> list[str]:
    return str(element.get_attribute("class") or "").split()


def number(text: str) -> int:
    return int(text.replace(",", "")) if text.replace(",", "").isdigit() else -1


def screenshot(driver: WebDriver, tmp_path: Path, name: str) -> Path:
    """Save the page as C{name}.png in C{tmp_path}, and in C{$NFORK_SCREENSHOTS}."""
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    target = os.environ.get("NFORK_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


def viewport(driver: WebDriver, width: int, height: int, mobile: bool = False) -> None:
    """Emulate a screen of C{width}x{height} CSS pixels (a phone's when C{mobile})."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1}
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {**metrics, "mobile": mobile}
    )


def dark(driver: WebDriver, on: bool) -> None:
    features = [{"name": "prefers-color-scheme", "value": "dark" if on else "light"}]
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": features})


@pytest.fixture
def backends(threaded_backend: Callable[..., ThreadedBackend]) -> list[str]:
    """Three backends answering JSON that differs between them."""
    body = '{{"item": "{path}", "served_by": {port}}}'
    return [threaded_backend(body=body).address for _ in range(3)]


def test_the_dashboard_shows_live_stats_and_switches_the_active_outbound(
    tmp_path: Path, browser: WebDriver, backends: list[str]
) -> None:
    config = write_config(
        tmp_path / "nfork.json",
        inbound_json(
            "web",
            out={
                "prod": backends[0],
                "staging": backends[1],
                "canary": {"addr": backends[2], "sample": 0.5},
            },
            active="prod",
            compare={"candidates": ["staging"]},
        ),
    )
    args = ["--config", str(config), "--control", "127.0.0.1:0"]
    with TwistdProcess(*args, cwd=str(tmp_path)) as twistd:
        api = f"http://127.0.0.1:{control_port(twistd)}"
        port = twistd.listening_port("web")
        with Traffic(port) as traffic:
            viewport(browser, 1280, 800)
            browser.get(f"{api}/ui/")
            until(
                browser, lambda: outbound_card(browser, "web", "staging"), "outbounds"
            )
            inbound = browser.find_element(By.CSS_SELECTOR, '[data-inbound="web"]')
            # The listen address, and the port it got.
            until(browser, lambda: f"127.0.0.1:{port}" in inbound.text, "the port")
            assert "listen 127.0.0.1:0" in inbound.text
            prod = outbound_card(browser, "web", "prod")
            assert "is-active" in classes(prod)
            assert prod.find_element(By.CSS_SELECTOR, ".badge").text == "ACTIVE"

            # Live counters: the staging shadow's total grows while traffic flows.
            first = until(
                browser,
                lambda: (
                    number(figure(browser, "web", "staging", "requests")) > 0
                    and number(figure(browser, "web", "staging", "requests"))
                ),
                "requests counted",
            )
            until(
                browser,
                lambda: number(figure(browser, "web", "staging", "requests")) > first,
                "the request count grow",
            )
            until(
                browser,
                lambda: (
                    figure(browser, "web", "staging", "rate") not in ("0", NO_VALUE)
                ),
                "a request rate",
            )
            assert figure(browser, "web", "staging", "p99").endswith("s")
            mix = outbound_card(browser, "web", "staging").find_element(
                By.CSS_SELECTOR, ".mix-text"
            )
            assert mix.text.startswith("200: ")

            # The comparison: the candidate's endpoints, a field, one sample.
            candidate = '[data-inbound="web"] [data-candidate="staging"]'
            until(
                browser,
                lambda: browser.find_elements(
                    By.CSS_SELECTOR, f"{candidate} td button"
                ),
                "compared endpoints",
            )[0].click()
            until(
                browser,
                lambda: browser.find_elements(
                    By.XPATH, "//tr[td[text()='$.served_by']]//button"
                ),
                "the differing field",
            )[0].click()
            sample = until(
                browser,
                lambda: browser.find_elements(By.CSS_SELECTOR, f"{candidate} .sample"),
                "a sample",
            )[0]
            primary, other = (
                e.text
                for e in sample.find_elements(By.CSS_SELECTOR, ".side-by-side pre")
            )
            assert backends[0].rpartition(":")[2] in primary
            assert backends[1].rpartition(":")[2] in other

            time.sleep(2)  # a few seconds of history in the chart
            browser.execute_script("window.scrollTo(0, 0)")
            screenshot(browser, tmp_path, "dashboard-light")
            dark(browser, True)
            screenshot(browser, tmp_path, "dashboard-dark")
            browser.execute_script(
                "document.querySelector('.compare').scrollIntoView()"
            )
            screenshot(browser, tmp_path, "dashboard-compare-dark")
            dark(browser, False)
            browser.execute_script("window.scrollTo(0, 0)")

            # Reset the comparison's counters.
            before = request(f"{api}/v1/nfork/web/compare")[1]
            browser.find_element(
                By.CSS_SELECTOR, '[data-action="reset-compare"]'
            ).click()
            browser.find_element(By.ID, "confirm-ok").click()
            until(
                browser,
                lambda: (
                    not browser.find_element(By.ID, "confirm-dialog").is_displayed()
                ),
                "the reset done",
            )
            after = request(f"{api}/v1/nfork/web/compare")[1]
            compared = [
                report["candidates"]["staging"]["compared"]
                for report in (before, after)
            ]
            assert compared[1] < compared[0], compared

            # An API error is shown with the API's own message.
            inbound.find_element(By.XPATH, ".//button[text()='Add outbound']").click()
            dialog = browser.find_element(By.ID, "confirm-dialog")
            assert dialog.is_displayed()
            browser.find_element(By.ID, "field-name").send_keys("bad")
            browser.find_element(By.ID, "field-addr").send_keys("ftp://nowhere")
            browser.find_element(By.ID, "confirm-ok").click()
            message = until(
                browser,
                lambda: browser.find_element(By.ID, "confirm-error").text,
                "the API's error",
            )
            code, answer = request(f"{api}/v1/nfork/web/bad", "PUT", "ftp://nowhere")
            assert (code, message) == (400, answer["error"])
            browser.find_element(By.ID, "confirm-cancel").click()
            assert not dialog.is_displayed()

            # Activate the staging shadow, through the confirmation, by keyboard.
            staging = outbound_card(browser, "web", "staging")
            staging.find_element(By.CSS_SELECTOR, '[data-action="activate"]').send_keys(
                Keys.ENTER
            )
            assert "staging" in browser.find_element(By.ID, "confirm-text").text
            focused = "return document.activeElement.id"
            assert browser.execute_script(focused) == "confirm-cancel"  # the safe one
            ActionChains(browser).send_keys(Keys.TAB).perform()
            assert browser.execute_script(focused) == "confirm-ok"
            ActionChains(browser).send_keys(Keys.ENTER).perform()
            until(
                browser,
                lambda: (
                    "is-active" in classes(outbound_card(browser, "web", "staging"))
                ),
                "staging active",
            )
            assert "is-active" not in classes(outbound_card(browser, "web", "prod"))
            assert request(f"{api}/v1/nfork/web")[1]["active"] == "staging"

            # A shadow's sample rate: its address is kept.
            canary = outbound_card(browser, "web", "canary")
            canary.find_element(By.CSS_SELECTOR, '[data-action="sample"]').click()
            rate = browser.find_element(By.ID, "field-sample")
            assert rate.get_attribute("value") == "0.5"
            rate.clear()
            rate.send_keys("0.25\n")
            until(
                browser,
                lambda: "sample 0.25" in outbound_card(browser, "web", "canary").text,
                "the new sample rate",
            )
            out = request(f"{api}/v1/nfork/web")[1]["out"]
            assert out["canary"] == {"addr": backends[2], "sample": 0.25}

            # Remove a shadow.
            canary = outbound_card(browser, "web", "canary")
            canary.find_element(By.CSS_SELECTOR, '[data-action="remove"]').click()
            browser.find_element(By.ID, "confirm-ok").click()
            until(
                browser,
                lambda: (
                    not browser.find_elements(
                        By.CSS_SELECTOR, '[data-outbound="canary"]'
                    )
                ),
                "canary removed",
            )
            assert "canary" not in request(f"{api}/v1/nfork/web")[1]["out"]

            viewport(browser, 390, 844, mobile=True)
            until(
                browser,
                lambda: browser.execute_script(
                    "return document.documentElement.scrollWidth <= window.innerWidth"
                ),
                "the page fit a phone's width",
            )
            screenshot(browser, tmp_path, "dashboard-phone")
        assert traffic.sent > 0
        assert twistd.terminate() == 0
    assert "Traceback" not in twistd.output()


def test_with_a_token_the_page_asks_for_it(
    tmp_path: Path, browser: WebDriver, backends: list[str]
) -> None:
    config = write_config(
        tmp_path / "nfork.json",
        inbound_json("web", out={"prod": backends[0], "staging": backends[1]}),
    )
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    args = [
        "--config",
        str(config),
        "--control",
        "127.0.0.1:0",
        "--control-token-file",
        str(token),
    ]
    with TwistdProcess(*args, cwd=str(tmp_path)) as twistd:
        api = f"http://127.0.0.1:{control_port(twistd)}"
        assert request(f"{api}/v1/nfork")[0] == 401
        browser.get(f"{api}/ui/")
        dialog = browser.find_element(By.ID, "token-dialog")
        until(browser, dialog.is_displayed, "the token dialog")
        field = browser.find_element(By.ID, "token-input")
        field.send_keys("a-wrong-token-0123456789\n")
        until(
            browser,
            lambda: browser.find_element(By.ID, "token-error").is_displayed(),
            "the token refused",
        )
        field.send_keys(TOKEN + "\n")
        until(browser, lambda: outbound_card(browser, "web", "staging"), "outbounds")
        assert not dialog.is_displayed()
        assert (
            browser.execute_script("return sessionStorage.getItem('nfork.token')")
            == TOKEN
        )
        # A reload keeps the token (same tab), the API still refuses without it.
        browser.refresh()
        until(browser, lambda: outbound_card(browser, "web", "prod"), "outbounds")
        assert request(f"{api}/v1/nfork/stats")[0] == 401
        assert request(f"{api}/v1/nfork/stats", token=TOKEN)[0] == 200
        assert twistd.terminate() == 0
