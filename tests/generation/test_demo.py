"""`soundvcm demo`: the backend without a browser, and the page end to end in headless Chromium."""

from __future__ import annotations

import shutil
import socket
import time

import pytest

from media_factory import make_video
from soundvcm.demo import DemoBackend, DemoConfig
from soundvcm.network.checkpoint import save_network
from soundvcm.network.mmdit import MMDiT
from soundvcm.pipeline import Pipeline
from soundvcm.spec import preset_for_encoders


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    config, encoder_set = preset_for_encoders("debug", "lite")
    save_network(d / "tiny", MMDiT(config), preset="debug", encoder_set=encoder_set, objective="vcm")
    b = DemoBackend(DemoConfig(models={"tiny": str(d / "tiny")}, max_seconds=3.0),
                    {"tiny": Pipeline.load(d / "tiny", device="cpu")})  # fmt: skip
    yield b
    b.close()
    assert not b.root.exists()  # nothing left behind


def test_backend_generates_each_mode_in_its_own_folder(backend, tmp_path):
    video = make_video(tmp_path / "v.mp4", duration=1.5, size=(64, 48))
    mp4, audio, png, report = backend.generate("video", str(video), "", "", 7, 1, 1.0, "tiny")
    assert mp4.endswith(".mp4") and audio.endswith(".flac") and png.endswith(".png")
    assert "**1 network evaluations**, seed 7" in report and "| vocoder |" in report
    mp4, audio, _, report = backend.generate("text", None, "rain on a roof", "music", -1, 2, 1.0, "tiny")
    assert mp4 is None and "**4 network evaluations**" in report  # 2 steps x (prompt + negative prompt)
    assert len(list((backend.root / "requests").iterdir())) == 1  # the earlier request's folder is gone


@pytest.mark.parametrize(
    "mode, media, prompt, message",
    [("text", None, " ", "write a prompt"), ("image", None, "", "upload an image"),
     ("video", None, "", "upload a video"),
     ("video", "corrupt", "", "corrupt.mp4: this file cannot be used as a video"),
     ("video", "long", "", "long.mp4 is 4.0 s long; this demo takes videos up to 3 s")],
)  # fmt: skip
def test_backend_refuses_bad_input_with_a_message(backend, tmp_path, mode, media, prompt, message):
    if media == "corrupt":
        media = tmp_path / "corrupt.mp4"
        media.write_bytes(b"\x00\x01not a video" * 100)
    elif media == "long":
        media = make_video(tmp_path / "long.mp4", duration=4.0, size=(64, 48))
    with pytest.raises(ValueError, match=message):
        backend.generate(mode, None if media is None else str(media), prompt, "", 0, 1, 1.0, "tiny")


@pytest.mark.parametrize(
    "seed, steps, duration, message",
    [(0, 1, "abc", "duration (s) must be a number, got 'abc'"), (0, 1, None, "duration (s) must be a number, got None"),
     (0, float("nan"), 1.0, "steps must be a finite number, got nan"), (0, 1.5, 1.0, "steps must be a whole number"),
     (0, 100000, 1.0, "steps must be from 1 to 1000"), (1e30, 1, 1.0, "seed must be -1 (random) or a whole number"),
     (0, 1, 1e-9, "duration must be from 0.64 to 3 s"), (0, 1, float("inf"), "duration (s) must be a finite number")],
)  # fmt: skip
def test_backend_checks_every_field_with_a_plain_message(backend, seed, steps, duration, message):
    with pytest.raises(ValueError) as exc:
        backend.generate("text", None, "rain", "", seed, steps, duration, "tiny")
    assert message in str(exc.value) and "Overflow" not in str(exc.value)


def test_gradio_keeps_its_temporary_files_in_the_demo_folder(backend):
    import os

    assert os.environ["GRADIO_TEMP_DIR"].startswith(str(backend.root))


def _browser():
    """A headless Chromium driven by selenium, or a skip naming what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (make test installs it)")
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no chromium/chromedriver (Debian: apt-get install chromium chromium-driver; make test does)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
    ):
        opts.add_argument(arg)
    opts.binary_location = chromium
    return webdriver.Chrome(service=Service(driver), options=opts)


def _wait(predicate, timeout: float = 180.0):
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s")


@pytest.mark.slow
def test_page_end_to_end_in_a_real_browser(backend, tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'soundvcm[demo]')")
    from selenium.webdriver.common.by import By

    from soundvcm.demo import build_app

    browser = _browser()
    # an upload has reached the server once the input shows its player with the served file
    uploaded = lambda: browser.execute_script(  # noqa: E731
        "const v = document.querySelector('#video-in video'); return !!(v && v.getAttribute('src'));"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(backend)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, max_file_size="1mb")
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        upload = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#video-in input[type=file]"), 60)[0]
        upload.send_keys(str(make_video(tmp_path / "clip.mp4", duration=1.5, size=(96, 64))))
        _wait(uploaded, 60)
        assert list((backend.root / "gradio").rglob("clip.mp4"))  # gradio's upload is inside our folder
        browser.find_element(By.ID, "video-generate").click()
        script = "const v = document.querySelector('#video-out-video video'); return v && v.duration > 0 && v.duration;"
        assert _wait(lambda: browser.execute_script(script)) > 0  # the muxed mp4 plays in the page
        assert "network evaluations" in browser.find_element(By.ID, "video-report").text
        corrupt = tmp_path / "corrupt.mp4"
        corrupt.write_bytes(b"\x00\x01not a video" * 100)
        browser.refresh()
        upload = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#video-in input[type=file]"), 60)[0]
        upload.send_keys(str(corrupt))
        _wait(uploaded, 60)
        browser.find_element(By.ID, "video-generate").click()
        body = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731
        assert _wait(lambda: "this file cannot be used as a video" in body(), 60)
        assert "corrupt.mp4" in body() and "/tmp/" not in body()  # the message names the file, not our folders
        browser.refresh()
        big = tmp_path / "big.mp4"
        big.write_bytes(bytes(1_500_000))  # over the 1 MB limit: refused before any of our code runs
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#video-in input[type=file]"), 60)[0].send_keys(str(big))
        assert _wait(lambda: "exceed the maximum allowed size" in body(), 60)
    finally:
        browser.quit()
        app.close()
