"""The MLflow UI as a person sees it: submit, open `mvp ui` in headless Chromium, check, screenshot.

Marked `browser` (needs Debian's chromium and the playwright package; `.ci/run` installs both).
Screenshots go to $MVP_SCREENSHOT_DIR when set, else to pytest's temporary folder (docs/img/mlflow_*.png
are two of them). One tiny submission (1 concept x 2 languages) serves both tests.
"""

import contextlib
import json
import os
import shutil
import signal
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
from tests.test_hostile_inputs import process_groups_under

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
                              env={**os.environ, "MLFLOW_TRACKING_URI": uri}, cwd=folder, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    groups = {server.pid}  # its own session; MLflow's server runs in a group of its own below it
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # MLflow's UI took 129 s to answer at load 19 on 2 cores
        while not _answers(base):
            groups |= process_groups_under(server.pid)
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mvp ui did not answer within 300 s (exit code {server.poll()})")
            time.sleep(0.5)
        groups |= process_groups_under(server.pid)
        yield base, MlflowClient(uri), summary
    finally:
        server.send_signal(signal.SIGTERM)  # mvp ui stops MLflow's process group
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=60)
        for group in groups:  # pass or fail, nothing left serving
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        server.wait(timeout=30)


def _answers(base: str) -> bool:
    try:
        return urllib.request.urlopen(base, timeout=2).status == 200
    except OSError:
        return False


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


def _close_assistant(page) -> None:
    """MLflow 3.17 opens its Assistant panel beside the page; closed, the runs table shows all its columns."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count():
        close.first.click()


def _column(page, name: str) -> list[str]:
    """The runs table's cells of one column, top to bottom (the grid names columns by ``col-id``)."""
    return [" ".join(cell.inner_text().split()) for cell in page.locator(f"[role=gridcell][col-id*='{name}']").all()]


def test_runs_table_shows_datasets_source_and_models_and_the_models_tab_lists_the_vectors(ui, page, tmp_path):
    base, client, summary = ui
    parent = client.get_run(summary.parent_run_id)
    experiment = parent.info.experiment_id
    extract = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
                                               "and tags.step = 'extract'")
    datasets = [f"{d.dataset.name} ({d.dataset.digest})" for run in extract for d in run.inputs.dataset_inputs]
    assert sorted(datasets)[0].startswith("morality_en (") and len(datasets) == 2
    models = client.search_logged_models([experiment])
    names = sorted(m.name for m in models)
    assert names == ["tiny-llama0-morality-en", "tiny-llama0-morality-fr"]
    assert {m.source_run_id for m in models} == {run.info.run_id for run in extract}
    source = Path(parent.data.tags["mlflow.source.name"].split()[-1]).name  # the UI shows the file's name
    assert source == "spec.yaml"

    page.set_viewport_size({"width": 1600, "height": 700})
    page.goto(f"{base}/#/experiments/{experiment}/runs")
    _wait_for_text(page, "browser (submission)")
    page.get_by_text("Model training", exact=True).click()  # the UI's own switch: its sidebar names "Models"
    _wait_for_text(page, "Model registry")
    _close_assistant(page)
    page.locator("button[data-component-id*=runnamecellrenderer]").first.click()  # expand the submission
    _wait_for_text(page, datasets[0])
    _wait_for_text(page, datasets[1])
    dataset_cells, source_cells, model_cells = _column(page, "Dataset"), _column(page, "Source"), _column(page, "Models")
    assert len(dataset_cells) == len(source_cells) == len(model_cells) == 4  # the parent and its 3 children
    for shown in datasets:  # each extraction run's row: its data file's name and digest, as logged
        assert sum(cell.startswith(shown) for cell in dataset_cells) == 1, (shown, dataset_cells)
    assert source_cells[0] == source  # the parent's row: the spec it ran
    assert sorted(cell for cell in model_cells if cell != "-") == names
    _shot(page, tmp_path, "5-runs-datasets-source-models")

    page.goto(f"{base}/#/experiments/{experiment}/models")
    page.get_by_role("heading", name="Models", exact=True).wait_for(timeout=30000)
    for name in names:
        _wait_for_text(page, name)
    _close_assistant(page)
    for run in extract:  # each model row links the run that logged it
        _wait_for_text(page, run.info.run_name)
    assert page.evaluate("() => document.body.innerText").count("Ready") == 2
    path = _shot(page, tmp_path, "6-models-tab")
    assert path.stat().st_size > 10_000
