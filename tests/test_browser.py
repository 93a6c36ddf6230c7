"""The MLflow UI as a person sees it: submit, open `mvp ui` in headless Chromium, check, screenshot.

Marked `browser` (needs Debian's chromium and the playwright package; `.ci/run` installs both).
Screenshots go to $MVP_SCREENSHOT_DIR when set, else to pytest's temporary folder.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mvplatform.spec import load_spec
from ray_jobs.submit import submit

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SPEC = """
name: browser
model: {{name: "{model}", device: cpu}}
data: {{dataset: "{data}", concepts: [morality], languages: [en, fr]}}
analyses: [recognition, consistency]
tracking: {{uri: "{uri}"}}
results: {{dir: "{results}"}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tiny_model_dir, mvalue_dir, tmp_path_factory):
    if not os.environ.get("MVP_REQUIRE_BROWSER"):
        pytest.importorskip("playwright")
        if not Path(CHROMIUM).exists():
            pytest.skip("no chromium")
    folder = tmp_path_factory.mktemp("browser")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    spec_path = folder / "spec.yaml"
    spec_path.write_text(SPEC.format(model=tiny_model_dir("llama"), data=mvalue_dir, uri=uri, results=folder / "r"))
    summary = submit(load_spec(spec_path), spec_path)
    assert summary.ok
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mvplatform.cli", "ui", "--port", str(port)],
                              env={**os.environ, "MLFLOW_TRACKING_URI": uri}, cwd=folder,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(base, timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mvp ui did not answer within 60 s")
        yield base, MlflowClient(uri), summary
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser.new_page(viewport={"width": 1400, "height": 900})
        browser.close()


def _shot(page, tmp_path, name: str) -> Path:
    folder = Path(os.environ.get("MVP_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def _wait_for_text(page, text: str, timeout_ms: int = 30000) -> None:
    page.wait_for_function("t => document.body && document.body.innerText.includes(t)", arg=text,
                           timeout=timeout_ms)


def _scroll_to_text(page, text: str, timeout_ms: int = 60000) -> None:
    """Scroll until ``text`` is rendered: the metrics tab draws only the charts in view, and a child run
    holds some 30 metrics (intervals, baselines), so recognition_accuracy starts below the fold."""
    import time

    page.mouse.move(700, 500)
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate("t => document.body.innerText.includes(t)", text):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not shown after scrolling for {timeout_ms / 1000:.0f} s")
        page.mouse.wheel(0, 600)
        page.wait_for_timeout(300)


def test_ui_shows_submission_child_runs_curve_figure_and_compare_view(ui, page, tmp_path):
    base, client, summary = ui
    parent = client.get_run(summary.parent_run_id)
    experiment = parent.info.experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
                                                "and tags.step = 'extract'")
    assert len(children) == 2

    page.goto(f"{base}/#/experiments/{experiment}/runs")
    _wait_for_text(page, "browser (submission)")
    _shot(page, tmp_path, "1-runs")

    child = next(c for c in children if c.data.tags["language"] == "fr")
    page.goto(f"{base}/#/experiments/{experiment}/runs/{child.info.run_id}/model-metrics")
    _wait_for_text(page, "Model metrics")
    _scroll_to_text(page, "recognition_accuracy")
    _wait_for_text(page, child.info.run_name)
    _shot(page, tmp_path, "2-per-layer-curve")

    page.goto(f"{base}/#/experiments/{experiment}/runs/{child.info.run_id}/artifacts/accuracy_per_layer.png")
    page.wait_for_function("() => [...document.images].some(i => i.complete && i.naturalWidth > 500)",
                           timeout=30000)
    _shot(page, tmp_path, "3-figure-artifact")

    runs = urllib.parse.quote(json.dumps([c.info.run_id for c in children]))
    experiments = urllib.parse.quote(json.dumps([experiment]))
    page.goto(f"{base}/#/compare-runs?runs={runs}&experiments={experiments}")
    _wait_for_text(page, "Comparing 2 Runs")
    for c in children:
        _wait_for_text(page, c.info.run_name)
    path = _shot(page, tmp_path, "4-compare")
    assert path.stat().st_size > 10_000
