"""The operator page in a real headless Chromium, against running device programs.

Selenium drives the system's Chromium through the system's chromedriver (never Selenium
Manager: the test must not download anything). Missing ones skip the test with the apt
command to install them, except under ``CI=true``, where CI is expected to provide them.
Screenshots go to ``$FACTORYEDGE_TEST_ARTIFACTS`` (default ``<repo>/.test-artifacts/``).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from factoryedge.runtimes.inspection.station import InspectionStation
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from tests.runtimes.plant.helpers import (
    alternating_replay,
    drive_parts_until,
    monitor_profile,
    parts_video,
    program_web,
    station_profile,
)
from tests.support.image_bundle import make_image_bundle

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
TIMEOUT = 60  # a busy 2-core machine: Chromium's start and the first polls can take a while
REPO = Path(__file__).resolve().parents[3]


def artifacts() -> Path:
    folder = Path(os.environ.get("FACTORYEDGE_TEST_ARTIFACTS") or REPO / ".test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser(monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager must never fetch a driver
    webdriver = pytest.importorskip("selenium.webdriver")
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        reason = f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must provide it", pytrace=False)
        pytest.skip(reason)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2200",
                "--disable-gpu", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, TIMEOUT, poll_frequency=0.2).until(lambda d: condition(d), message=what)


def text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def attr(driver, element_id: str, name: str) -> str:
    return driver.find_element("id", element_id).get_attribute(name) or ""


def run_in_thread(program):
    runner = threading.Thread(target=program.run, daemon=True)
    runner.start()
    return runner


def stop(program, runner) -> None:
    program.stop()
    runner.join(30)
    assert not runner.is_alive()


def test_timeline_follows_a_running_condition_monitor(tmp_path, broker, sim_bundle, browser):
    monitor = ConditionMonitor(load_profile(monitor_profile(tmp_path, sim_bundle, broker, alternating_replay(tmp_path))))
    runner = run_in_thread(monitor)
    try:
        browser.get(program_web(monitor).url)
        wait(browser, lambda d: text(d, "model-name") == "sim-bearing", "the model card")
        assert text(browser, "model-version") and "median" in text(browser, "threshold-rule")
        assert "plant1/l2/pump-7" in text(browser, "device-identity")
        assert text(browser, "threshold") not in ("", "–") and text(browser, "signer")
        assert browser.find_element("id", "inspection-card").is_displayed() is False

        # scores arrive: points are plotted, and the newest point moves on
        wait(browser, lambda d: int(attr(d, "timeline", "data-points")) >= 2, "scores plotted on the timeline")
        first_latest = float(attr(browser, "timeline", "data-latest"))
        first_points = int(attr(browser, "timeline", "data-points"))
        wait(browser, lambda d: float(attr(d, "timeline", "data-latest")) > first_latest
             and int(attr(d, "timeline", "data-points")) > first_points, "the timeline to move on")
        assert attr(browser, "timeline-score", "points").count(",") >= 2
        assert float(attr(browser, "timeline-threshold", "y1")) > 0  # the threshold line is drawn
        assert int(text(browser, "windows-scored")) > 0

        # the replay's faulty stretch raises an anomaly: the state and the events table show it
        wait(browser, lambda d: int(text(d, "events-total")) >= 1
             and d.find_elements("css selector", "#events tr"), "an anomaly event on the page")
        assert text(browser, "health-outbox") != "–"
        assert attr(browser, "threshold-submit", "disabled") is not None  # no token typed: nothing to send
        browser.save_screenshot(str(artifacts() / "operator-page-condition-monitor.png"))
    finally:
        stop(monitor, runner)


def test_reject_gallery_shows_a_defective_part(tmp_path, broker, browser):
    bundle = make_image_bundle(tmp_path / "bundle")
    token = tmp_path / "operator.token"
    token.write_text("line-3-operator-token\n")
    station = InspectionStation(load_profile(station_profile(tmp_path, bundle, broker, parts_video(tmp_path / "parts.avi"),
                                                             operator_token_file=str(token))))
    runner = run_in_thread(station)
    try:
        browser.get(program_web(station).url)
        wait(browser, lambda d: text(d, "model-name") == "template", "the model card")
        assert browser.find_element("id", "inspection-card").is_displayed()
        assert station.sink.wait_connected(10)

        def reject_in_gallery() -> bool:
            figures = browser.find_elements("css selector", "#gallery figure.reject img")
            return len(figures) >= 2 and all(
                browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                for img in figures)

        drive_parts_until(broker, tmp_path, reject_in_gallery, TIMEOUT, "a rejected part's frame and heatmap")
        figure = browser.find_element("css selector", "#gallery figure.reject")
        part_id = figure.get_attribute("data-part-id")
        assert part_id.startswith("part-") and "score 0." in figure.text and "threshold" in figure.text
        srcs = [img.get_attribute("src") for img in figure.find_elements("tag name", "img")]
        assert srcs[0].endswith(".png") and srcs[1].endswith(".heat.png")
        rejected = [d for d in station.live.recent_decisions if d["verdict"] == "reject"]
        assert part_id in {d["part_id"] for d in rejected}

        wait(browser, lambda d: int(text(d, "count-reject")) >= 1 and int(text(d, "count-pass")) >= 1,
             "pass and reject counts")
        assert text(browser, "reject-rate").endswith("%")
        assert browser.find_elements("css selector", "#decisions tr.reject")
        latency = browser.find_element("css selector", "#decisions tr td:nth-child(5)").text
        assert latency.endswith(" ms")

        # an operator with the token changes the threshold from the page
        browser.find_element("id", "token").send_keys("line-3-operator-token")
        browser.find_element("id", "new-threshold").send_keys("0.75")
        browser.find_element("id", "threshold-submit").click()
        wait(browser, lambda d: "0.75" in text(d, "threshold-result"), "the threshold change answered")
        assert station.model.threshold == 0.75
        wait(browser, lambda d: text(d, "threshold") == "0.7500", "the new threshold shown")
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(artifacts() / "operator-page-inspection.png"))
    finally:
        stop(station, runner)
