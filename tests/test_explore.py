"""The explorer: its answers, its server, its command line, and the page in headless Chromium.

The browser test needs Debian's chromium and chromium-driver (.ci/run installs them) and
selenium (requirements-dev.txt); it skips, saying why, only when they are absent. With
EXPLORER_SCREENSHOT=<file.png> it saves a screenshot of the page (EXPLORER_RUN=<run>
shows that run instead of the tiny one): docs/explorer.png is made so.
"""

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tiny_runs import tiny_run

import api
from errors import UserError
from figure_scripts import explore

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory, "dcgan")


@pytest.fixture(scope="module")
def explorer(run_dir):
    return explore.Explorer(api.open_run(run_dir), size=8, cols=4, zoom=2)


@pytest.fixture(scope="module")
def server(explorer):
    """The explorer served on a free port in a thread: its base URL."""
    httpd = explore.make_server(explorer, 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def get(url: str):
    """(status, body bytes, content type) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers["Content-Type"]


def q(**fields) -> str:
    return urllib.parse.quote(json.dumps(fields))


def test_an_answer_has_both_grids_and_the_probabilities(explorer):
    answer = explorer.view(explore.parse_query(json.dumps({"do": {"Bald": 1}, "seed": 2})))
    main, other = answer["main"], answer["compare"]
    assert main["title"] == "do(Bald=1)" and other["title"] == "Bald=1"  # do and given swapped
    assert main["grid"].startswith("data:image/png;base64,") and main["error"] is None
    p = explorer.run.probabilities(do={"Bald": 1}, seed=2)
    assert main["probabilities"]["Male"]["model"] == pytest.approx(p.loc["Male", "model"], abs=1e-4)
    assert main["probabilities"]["Male"]["truth"] == pytest.approx(0.422, abs=1e-3)
    none = explorer.view(explore.parse_query(json.dumps({"do": {"Bald": 1}, "compare": "none"})))
    assert none["compare"]["title"] == "observational"


def test_the_server_answers_on_localhost_and_bad_choices_are_messages(server, explorer):
    assert server.startswith("http://127.0.0.1:")
    status, body, kind = get(server + "/")
    assert status == 200 and kind.startswith("text/html") and b'id="graph"' in body
    assert body.count(b'type="radio"') == 5 * len(explorer.run.label_names)
    status, body, _ = get(server + "/api/view?q=" + q(do={"Bald": 1}))
    assert status == 200 and json.loads(body)["main"]["error"] is None
    # a node not in the graph, and a condition that never holds: messages, the server lives on
    answer = json.loads(get(server + "/api/view?q=" + q(do={"Nose": 1}))[1])
    assert "Nose is not a node" in answer["main"]["error"]
    answer = json.loads(get(server + "/api/view?q=" + q(do={"Male": 1}, cond={"Bald": 1},
                                                        compare="none"))[1])
    assert answer["main"]["error"] is None or "almost never" in answer["main"]["error"]
    answer = json.loads(get(server + "/api/view?q=" + q(do={"Bald": 0}, cond={"Male": 1}))[1])
    assert answer["main"]["error"] is None
    status, body, _ = get(server + "/api/view?q=%7Bnot%20json")
    assert status == 400 and "not JSON" in json.loads(body)["error"]
    status, body, _ = get(server + "/api/view?q=" + q(do={"Bald": 1}, cond={"Bald": 1}))
    assert status == 400 and "not both" in json.loads(body)["error"]
    status, body, kind = get(server + "/api/grid.png?q=" + q(do={"Bald": 1}))
    assert status == 200 and kind == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"
    import io

    from PIL import Image

    with Image.open(io.BytesIO(body)) as im:  # the choice above its comparison
        assert im.size == (4 * 18 + 2, 2 * (2 * 18 + 2))
    assert get(server + "/nothing")[0] == 404


def test_a_controller_only_run_is_refused(tmp_path_factory):
    with pytest.raises(UserError, match="controller only"):
        explore.Explorer(api.open_run(tiny_run(tmp_path_factory, "controller")))


def test_the_command_prints_its_address_and_serves(run_dir):
    """python -m figure_scripts explore --load_path <run> (docs/API.md), then stopped."""
    process = subprocess.Popen([sys.executable, "-m", "figure_scripts", "explore",
                                "--load_path", str(run_dir), "--size", "4"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"explorer: (http://127\.0\.0\.1:\d+/)", line)
        assert match, line + process.stderr.read()[-2000:]
        status, body, _ = get(match.group(1) + "api/view?q=" + q(do={"Bald": 1}))
        assert status == 200 and json.loads(body)["main"]["error"] is None
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_command_with_a_bad_folder_exits_2_with_a_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", "figure_scripts", "explore", "--load_path",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "no params.json" in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- the browser
def browser():
    """A headless Chromium driven by Debian's chromedriver (never downloaded), or a skip."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"headless Chromium is not installed ({CHROMIUM}, {CHROMEDRIVER}): "
                    "apt-get install chromium chromium-driver (.ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install -r requirements-dev.txt)")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must fetch nothing
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1800,1150"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for_version(driver, version: int, seconds: float = 60.0) -> None:
    """Until the page has applied its ``version``-th answer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        shown = driver.execute_script("return document.body.dataset.version || '0'")
        if int(shown) >= version:
            return
        time.sleep(0.05)
    raise AssertionError(f"the page did not redraw within {seconds} s (version {shown})")


def test_the_page_in_headless_chromium(server, explorer, monkeypatch):
    """do(Bald=1) redraws the grid and shows the controller's P(Male); a condition the
    controller cannot meet is a message on the page, which goes on answering."""
    driver = browser()
    from selenium.webdriver.common.by import By

    other = os.environ.get("EXPLORER_RUN")
    httpd, url, shown = None, server, explorer
    try:
        if other:  # the screenshot of a trained run
            shown = explore.Explorer(api.open_run(other), size=16, cols=8, zoom=3)
            httpd = explore.make_server(shown, 0)
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{httpd.server_address[1]}"
        driver.get(url + "/")
        wait_for_version(driver, 1)
        before = driver.find_element(By.ID, "grid-main").get_attribute("src")
        choose(driver, "Bald", "do1")
        wait_for_version(driver, 2)
        after = driver.find_element(By.ID, "grid-main").get_attribute("src")
        assert after.startswith("data:image/png") and after != before
        assert driver.find_element(By.ID, "title-main").text == "Choice: do(Bald=1)"
        assert driver.find_element(By.ID, "title-compare").text == "Comparison: Bald=1"
        expected = shown.run.probabilities(do={"Bald": 1}, seed=0).loc["Male", "model"]
        assert abs(float(driver.find_element(By.ID, "p-main-model-Male").text) - expected) <= 0.05
        truth = driver.find_element(By.ID, "p-main-truth-Male").text
        assert abs(float(truth) - 0.422) <= 1e-3
        assert driver.find_element(By.ID, "message").text == ""

        with monkeypatch.context() as patch:  # now no condition is met often enough
            patch.setattr(api, "MIN_ACCEPTANCE", 1.01)
            choose(driver, "Male", "given1")
            wait_for_version(driver, 3)
            assert "almost never meets the condition Male=1" in driver.find_element(
                By.ID, "message").text
            assert driver.find_element(By.ID, "grid-main").get_attribute("src") == after
        choose(driver, "Male", "free")
        wait_for_version(driver, 4)
        assert driver.find_element(By.ID, "message").text == ""
        target = os.environ.get("EXPLORER_SCREENSHOT")
        if target:  # a 256-colour PNG: small enough to keep in docs/
            from PIL import Image

            with Image.open(io.BytesIO(driver.get_screenshot_as_png())) as shot:
                shot.convert("RGB").quantize(256).save(target, optimize=True)
    finally:
        driver.quit()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()


def choose(driver, node: str, choice: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'input[name="choice-{node}"][value="{choice}"]').click()


def test_the_latency_benchmark_answers_help(capsys):
    from benchmarks import explore_latency

    with pytest.raises(SystemExit) as info:
        explore_latency.main(["--help"])
    assert info.value.code == 0 and "usage" in capsys.readouterr().out
