"""The browser app in a real browser (Debian's headless Chromium through Selenium): a person's
whole usage on the default models. Annotate two images by drawing on the canvas with mouse
events, train the few-shot LSE, edit a sample with a stroke, download the result and reopen it
with ``lineargan-edit``. Screenshots of each page land in the test's temporary folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lineargan.masks import load_mask_png

pytestmark = pytest.mark.slow

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CLASSES = ("background", "skin", "eyebrows", "eyes", "nose", "lips", "mouth")
SKIN = CLASSES.index("skin")
RES, CANVAS = 64, 384  # the generator's pixels, the editor canvas's CSS pixels
STROKE_Y, STROKE_X = (6, 10), (8, 56)  # label-pixel rows and columns the strokes cover


@pytest.fixture
def server(tmp_path):
    """``python -m flows.edit serve`` on a free port of 127.0.0.1, stopped by its PID."""
    workspace = tmp_path / "ws"
    env = {**os.environ, "LINEARGAN_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.edit", "serve", "--workspace", str(workspace)]
        + ["--device", "cpu"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).parents[1],
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving on http://127.0.0.1:"), line
        yield line.split()[-1], workspace
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.fail("no Chromium: run scripts/test.sh (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1000"):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.implicitly_wait(0)
    driver.downloads = downloads
    yield driver
    driver.quit()


def until(check, timeout: float = 120, what: str = ""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def stroke(driver, canvas, row: int) -> None:
    """A mouse stroke along label row ``row`` from STROKE_X[0] to STROKE_X[1]: press, several
    moves, release (offsets from the canvas's centre, in CSS pixels)."""
    from selenium.webdriver.common.action_chains import ActionChains

    scale = CANVAS / RES
    x0 = (STROKE_X[0] + 0.5 - RES / 2) * scale
    y = (row + 0.5 - RES / 2) * scale
    chain = ActionChains(driver).move_to_element_with_offset(canvas, int(x0), int(y))
    chain.click_and_hold()
    step = (STROKE_X[1] - STROKE_X[0]) * scale / 6
    for _ in range(6):
        chain.move_by_offset(int(step), 0)
    chain.release().perform()


def paint_skin(driver, canvas_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, f"class-{SKIN}").click()
    canvas = driver.find_element(By.ID, canvas_id)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    for row in range(STROKE_Y[0], STROKE_Y[1], 2):
        stroke(driver, canvas, row)


def region() -> np.ndarray:
    mask = np.zeros((RES, RES), bool)
    mask[STROKE_Y[0] : STROKE_Y[1] - 1, STROKE_X[0] + 2 : STROKE_X[1] - 2] = True
    return mask


def test_annotate_train_edit_and_download_in_a_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, ws = server
    shots = tmp_path / "screenshots"
    shots.mkdir()
    text = lambda id_: browser.find_element(By.ID, id_).text  # noqa: E731
    browser.get(url)
    until(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), 30, "page")

    # 1. annotate two images: sample, paint skin over their top rows, add to the training set
    browser.find_element(By.ID, "sample-annotate").click()
    until(lambda: "reference" in text("annotate-status") or "saved" in text("annotate-status"))
    for k in range(2):
        name = until(lambda: text("annotate-name"), 30, "an image to annotate")
        time.sleep(0.3)  # the mask drawn
        paint_skin(browser, "annotate-canvas")
        browser.find_element(By.ID, "add-training").click()
        until(lambda k=k: text("training-count") == str(k + 1), 30, "the annotation")
        painted = load_mask_png(ws / "train" / f"{name}.mask.png", CLASSES, RES)
        assert (painted[region()] == SKIN).all(), f"the strokes on {name} were not saved"
        if k == 0:  # the page moves on to the next image not yet annotated
            until(lambda name=name: text("annotate-name") != name, 30, "the next image")
    browser.save_screenshot(str(shots / "1-annotate.png"))

    # 2. train with the live view
    browser.find_element(By.ID, "iterations").send_keys("100")
    browser.find_element(By.ID, "train").click()
    until(lambda: text("train-state") == "done", 180, "the training")
    assert text("train-iou") != "–" and float(text("train-loss")) > 0
    assert (ws / "lse" / "config.json").is_file()
    browser.save_screenshot(str(shots / "2-trained.png"))

    # 3. edit a new sample: paint skin over its top rows, run SIE
    browser.find_element(By.ID, "tab-edit").click()
    browser.find_element(By.ID, "edit-sample").click()
    original = until(lambda: text("edit-name"), 60, "a sample to edit")
    time.sleep(0.3)
    paint_skin(browser, "edit-canvas")
    steps = browser.find_element(By.ID, "sie-steps")
    steps.clear()
    steps.send_keys("30")
    browser.find_element(By.ID, "run-sie").click()
    until(lambda: text("sie-state") == "done", 120, "the edit")
    # the page shows the result (score, edited mask, links) after the job's "done"
    links = until(lambda: browser.find_elements(By.CSS_SELECTOR, "#edit-downloads a"), 30, "links")
    until(lambda: text("edit-score"), 30, "the edit's score")
    browser.save_screenshot(str(shots / "3-edited.png"))

    # 4. download image, mask and latent through the page's links
    for link in links:
        link.click()
    names = [link.text for link in links]
    until(lambda: all((browser.downloads / n).is_file() for n in names), 30, f"downloads {names}")
    edited = browser.downloads / names[0].removesuffix(".png")
    target = load_mask_png(ws / "edits" / f"{edited.name}-target.mask.png", CLASSES, RES)
    before = load_mask_png(ws / "samples" / f"{original}.mask.png", CLASSES, RES)
    after = load_mask_png(edited.with_name(edited.name + ".mask.png"), CLASSES, RES)
    inside = region()
    assert (target[inside] == SKIN).all()
    assert (after[inside] != before[inside]).any(), "the edit changed nothing inside the stroke"
    with Image.open(edited.with_name(edited.name + ".png")) as image:
        assert image.size == (RES, RES)
    # the downloaded sidecar reopens with lineargan-edit (its mask with the CLI's checks)
    again = tmp_path / "again" / "edit"
    cli = subprocess.run(
        [sys.executable, "-m", "flows.edit", "edit", "--sample", str(edited) + ".json"]
        + ["--mask", str(edited) + ".mask.png", "--lse", str(ws / "lse"), "--out", str(again)]
        + ["--steps", "1", "--device", "cpu", "--segmenter", "null"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert cli.returncode == 0, cli.stderr
    assert again.with_name("edit.json").is_file()
    # 5. sample for the painted layout (SCS) from the page
    browser.find_element(By.ID, "run-scs").click()
    until(lambda: text("scs-state") == "done", 120, "SCS")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#scs-results img")) == 2
    browser.save_screenshot(str(shots / "4-scs.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors  # no script error, no failed request along the way
    # 6. a bad request is answered in the page, in words
    steps.clear()
    steps.send_keys("99999")
    browser.find_element(By.ID, "run-sie").click()
    message = until(lambda: text("message"), 30, "the error message")
    assert "steps" in message and "Fix:" in message, message
    # screenshots stay in the temporary folder (not committed); say where
    print(f"screenshots: {shots}")
    keep = os.environ.get("LINEARGAN_SCREENSHOTS")
    if keep:
        shutil.copytree(shots, keep, dirs_exist_ok=True)
