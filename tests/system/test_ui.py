"""`make ui`: the MLflow UI over a real store, as a user meets it in a real browser.

The browser is Debian's Chromium (``apt-get install chromium``, which ``.ci/run`` does), driven
headless by Playwright; Playwright's own browser downloads are never used. Where no Chromium
is installed the browser test is skipped and says so. ``WDEXP_SCREENSHOTS=<folder>`` keeps the
screenshots the README shows (``docs/``); otherwise they go to the test's temp folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PYTHON, StoreReader, child_env, free_port, sweep_here
from wdexp.config import ROOT
from wdexp.tracking import view

# One worker runs this module under pytest-xdist: its fixture starts once.
pytestmark = pytest.mark.xdist_group("test_ui")

CHROMIUM = Path("/usr/bin/chromium")
# What Chromium needs on these machines: no sandbox as root, no GPU, and none of its own
# network traffic (the machine's closed network refuses it, many requests at a time).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic"]


@dataclass
class Ui:
    link: str
    store: StoreReader
    lone_pair: str
    sweep_pairs: list[str]


def _wait_for_line(process: subprocess.Popen[str], deadline: float) -> str:
    line = process.stdout.readline()
    assert line or time.monotonic() < deadline, "make ui printed nothing"
    return line.strip()


# Session scope: pytest tears a module-scoped fixture down whenever a worker's next test is
# another module's, and xdist may put one between two of this module's.
@pytest.fixture(scope="session")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    """A store with a lone pair and a four-pair sweep, served by `make ui` on a free port."""
    folder = tmp_path_factory.mktemp("ui")
    store_uri = f"sqlite:///{folder}/mlflow.db"
    # The README's first two commands, as its screenshots show them.
    lone = subprocess.run([PYTHON, "-m", "wdexp.train", f"tracking.uri={store_uri}",
                           f"hydra.run.dir={folder}/run"], capture_output=True, text=True,
                          cwd=folder, timeout=120, env=child_env())
    assert lone.returncode == 0, lone.stderr
    port = free_port()
    # The UI starts while the sweep runs: it reads the store live.
    process = subprocess.Popen(["make", "--no-print-directory", "ui", f"PORT={port}",
                                f"STORE={store_uri}"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               env=child_env())
    try:
        swept = sweep_here("optimizer.weight_decay=0,0.001,0.01,0.1", tmp_path=folder,
                           store_uri=store_uri)
        assert swept.status == "FINISHED"
        reader = StoreReader(store_uri)
        pairs = reader.runs("pair")
        lone_pair = [p.info.run_id for p in pairs if "mlflow.parentRunId" not in p.data.tags]
        deadline = time.monotonic() + 120
        line = _wait_for_line(process, deadline)
        while not line.startswith("wdexp:"):  # make's own echo of the command comes first
            line = _wait_for_line(process, deadline)
        link = line.split(" opens at ")[-1]
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the UI did not answer in time"
                time.sleep(0.5)
        yield Ui(link, reader, lone_pair[0],
                 [p.info.run_id for p in pairs if p.info.run_id != lone_pair[0]])
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_make_ui_prints_the_link_to_the_experiments_comparison_view(ui):
    experiment_id = ui.store.experiment.experiment_id
    port = re.search(r"127\.0\.0\.1:(\d+)", ui.link).group(1)
    assert ui.link == view.link(f"http://127.0.0.1:{port}", experiment_id)
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    with urllib.request.urlopen(url, timeout=10) as response:
        served = json.load(response)["experiment"]
    assert served["name"] == "weight-decay"
    assert any(tag["key"] == view.VIEW_TAG for tag in served["tags"])


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="no browser: Debian's chromium is not installed "
                           "(apt-get install chromium; .ci/run does)")
def test_the_ui_opens_on_the_runs_with_each_pairs_result_its_arms_and_figures(ui, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a first page load on a busy 2-core machine is slow
    shots = Path(os.environ.get("WDEXP_SCREENSHOTS") or tmp_path)
    lone = ui.store.client.get_run(ui.lone_pair)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1440, "height": 720})
        browser.set_default_timeout(60_000)
        page = browser.new_page()
        # Without wdexp's link MLflow 3.17 opens an experiment in its GenAI mode; its "Model
        # training" switch shows the runs, and the Views menu offers the comparison view.
        page.goto(ui.link.split("/#/")[0] + f"/#/experiments/{ui.store.experiment.experiment_id}")
        expect(page.get_by_text("No data available for the selected time range").first
               ).to_be_visible()
        page.get_by_role("button", name="Got it").click()  # the "Detect Issues" pop-up
        page.get_by_text("Model training", exact=True).click()
        expect(page.get_by_text("Run Name", exact=True)).to_be_visible()
        page.get_by_test_id("saved-views-trigger").click()
        expect(page.get_by_text(view.VIEW_NAME, exact=True)).to_be_visible()
        page.close()

        page = browser.new_page()  # a new tab: the link loads the whole page, as pasted
        page.goto(ui.link)
        expect(page.get_by_text("You're viewing a shared view", exact=False)).to_be_visible()

        # The runs table in the saved view, not the GenAI overview a bare link opens on.
        expect(page.get_by_text("Run Name", exact=True)).to_be_visible()
        expect(page.get_by_text("decay.final_loss", exact=True)).to_be_visible()
        expect(page.get_by_test_id("saved-views-trigger")).to_have_text(view.VIEW_NAME)
        expect(page.get_by_text("No data available for the selected time range")).to_have_count(0)
        for run in [*ui.store.runs("sweep"), lone]:
            expect(page.get_by_role("link", name=run.info.run_name, exact=True)).to_be_visible()
        # The lone pair's row shows its result: decay.final_loss as stored (UI cuts digits).
        final = f"{lone.data.metrics['decay.final_loss']:.6}"[:6]
        row = page.get_by_role("row").filter(has_text=lone.info.run_name)
        expect(page.get_by_role("row").filter(has_text=final).first).to_be_visible()

        # The pair's "+" expands into its two arms.
        row.first.locator('[col-id="attributes.`Run Name`"] button').first.click()
        for arm in ("baseline (wd=0)", "decay (wd=0.01)"):
            expect(page.get_by_role("link", name=arm, exact=True)).to_be_visible()
        close = page.get_by_role("button", name="Close")  # MLflow's assistant panel, if open
        if close.count():
            close.first.click()
        page.screenshot(path=str(shots / "ui-runs.png"))
        # The sweep's "+" expands into its pairs, each with its arms' final values.
        (sweep,) = ui.store.runs("sweep")
        page.get_by_role("row").filter(has_text=sweep.info.run_name).first.locator(
            '[col-id="attributes.`Run Name`"] button').first.click()
        for pair_id in ui.sweep_pairs:
            expect(page.locator(f'a[href$="/runs/{pair_id}"]')).to_be_visible()

        # The chart view: the arms' loss over the steps, found by the chart search.
        page.locator("label:has(input[value=CHART])").first.click()
        page.get_by_placeholder("Search metric charts").fill("loss")
        expect(page.get_by_text("loss", exact=True).first).to_be_visible()
        expect(page.get_by_text("Step", exact=True).first).to_be_visible()
        page.locator("label:has(input[value=TABLE])").first.click()

        # The pair's figures render in its Artifacts tab.
        page.locator(f'a[href$="/runs/{ui.lone_pair}"]').click()
        page.get_by_role("tab", name="Artifacts").click()
        page.get_by_text("figures", exact=True).click()
        page.get_by_text("loss.png", exact=True).click()
        image = page.locator("img[src^='blob:']").first  # the PNG as the UI fetched it
        expect(image).to_be_visible()
        assert image.evaluate("img => img.complete && img.naturalWidth") == 640
        page.screenshot(path=str(shots / "ui-figure.png"))
        browser.close()
