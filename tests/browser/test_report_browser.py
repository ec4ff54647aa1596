"""The HTML report in a real headless Chromium (the system's package, driven by Selenium).

Skips, saying why, where Chromium, its driver or Selenium is missing (`.ci/run` installs them
with apt). Set ``LESION_REPORT_SCREENSHOT=docs/report.png`` to also write the README's screenshot.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lesion import sweep
from lesion.data import load_dataset
from lesion.models import load_model
from lesion.plans import pairs, single
from lesion.report import write_report
from lesion.store import Run
from lesion.train import train_model

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip(
            "headless Chromium is not installed (need the system's chromium and chromedriver on PATH; "
            "Debian: apt-get install chromium chromium-driver — .ci/run does this)"
        )
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never downloads a browser or driver.
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real run (MLP trained 3 epochs on digits; every unit alone, pairs of fc1:0-5) and its report."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("browser") / "run"
    data = load_dataset("digits")
    checkpoint = train_model(
        "meyes2019-mlp", data, seed=0, epochs=3, lr=0.05, momentum=0.9, batch_size=32, model_kwargs={"in_features": 64}
    )
    model = load_model("meyes2019-mlp", in_features=64)
    model.load_state_dict(checkpoint["trained"])
    sweep(model, data.test, [single(model, "fc1;fc2"), pairs(model, "fc1:0-5")], out, model_name="meyes2019-mlp").close()
    return write_report(out)


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``condition`` until it returns something truthy (a wait for the page, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def click(driver: Any, element: Any) -> None:
    """A real mouse click, with the element scrolled clear of the sticky header first."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def severe_logs(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def column(driver: Any, field: str) -> list[str]:
    """The texts of the lesion table's rendered cells of ``field``, top to bottom (read in one step: rows re-render)."""
    selector = f"#view-run-0 .lesion-table .tabulator-row .tabulator-cell[tabulator-field='{field}']"
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map((c) => c.textContent.trim())", selector)


def test_report_in_chromium(browser: Any, report: Path, tmp_path: Path) -> None:
    run = Run(report.parent)
    table = run.table("top1")
    change = (table.drop(index="intact") - table.loc["intact"]) * 100
    before, _ = run.correct("intact")
    labels = run.labels

    browser.get(report.resolve().as_uri())
    assert wait_for(lambda: browser.execute_script("return !!(window.lesionReport && window.lesionReport.tables['lesions-0'])"))
    wait_for(lambda: column(browser, "key"))
    assert severe_logs(browser) == []

    # sort by "lost": click its header twice (ascending, then descending) and check the order against the database
    header = browser.find_element(By.CSS_SELECTOR, "#view-run-0 .lesion-table .tabulator-col[tabulator-field='lost'] .tabulator-col-title")
    click(browser, header)
    click(browser, header)
    lost_db = {key: int(v) for key, v in run.metrics(metric="lost").query("`class` == -1")[["lesion", "value"]].itertuples(index=False) if key != "intact"}
    shown = wait_for(lambda: [int(v) for v in column(browser, "lost")] if column(browser, "lost") else None)
    keys = column(browser, "key")
    assert len(shown) >= 8
    assert shown == sorted(lost_db.values(), reverse=True)[: len(shown)]
    assert [lost_db[k] for k in keys] == shown

    # filter by layer: only fc2's 10 single lesions remain
    layer_filter = browser.find_element(By.CSS_SELECTOR, "#view-run-0 .lesion-table .tabulator-col[tabulator-field='layers'] input")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", layer_filter)
    layer_filter.send_keys("fc2")
    assert wait_for(lambda: set(column(browser, "layers")) == {"fc2"})
    assert sorted(column(browser, "key")) == sorted(k for k in lost_db if k.startswith("fc2:"))
    layer_filter.clear()
    layer_filter.send_keys(" ")  # an input event: the filter is emptied
    layer_filter.clear()
    assert wait_for(lambda: len(set(column(browser, "layers"))) == 2)

    # hover a heatmap cell and read the tooltip
    chart = browser.find_element(By.CSS_SELECTOR, "#view-run-0 .chart-heatmap")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
    x, y = 1, 5
    heat = browser.execute_script("return JSON.parse(document.getElementById('lesion-data').textContent).runs[0].heatmap")
    key = browser.execute_script(f"return JSON.parse(document.getElementById('lesion-data').textContent).runs[0].lesions.key[{heat[x]}]")
    px, py = browser.execute_script(f"return lesionReport.charts['heatmap-0'].convertToPixel({{seriesIndex: 0}}, [{x}, {y}])")
    size = chart.size
    ActionChains(browser).move_to_element_with_offset(chart, int(px - size["width"] / 2), int(py - size["height"] / 2)).perform()
    tooltip = wait_for(lambda: next((d.text for d in chart.find_elements(By.CSS_SELECTOR, "div") if "lesion" in d.text and d.is_displayed()), None))
    class_name = run.class_names[y]
    assert tooltip is not None, "no tooltip over the heatmap cell"
    assert f"lesion {key}" in tooltip and f"class {class_name}:" in tooltip
    assert f"{change.loc[key, class_name]:+.2f} pp" in tooltip

    # clicking the cell opens that lesion's view
    ActionChains(browser).click().perform()
    assert wait_for(lambda: browser.execute_script("const v = document.querySelector('#view-run-0 .lesion-view'); return !v.hidden && v.dataset.lesion") == key)

    # open the most damaging lesion by clicking its table row; check the view's numbers against the database
    worst = change["all"].idxmin()
    click(browser, browser.find_element(By.CSS_SELECTOR, "#view-run-0 .lesion-table .tabulator-col[tabulator-field='d1'] .tabulator-col-title"))
    row = wait_for(lambda: next((r for r in browser.find_elements(By.CSS_SELECTOR, "#view-run-0 .lesion-table .tabulator-row")
                                  if r.find_element(By.CSS_SELECTOR, "[tabulator-field='key']").text == worst), None))
    assert row is not None, f"row {worst} not shown after sorting by top-1 change"
    click(browser, row)
    view = browser.find_element(By.CSS_SELECTOR, "#view-run-0 .lesion-view")
    assert wait_for(lambda: view.get_attribute("data-lesion") == worst)
    assert browser.current_url.endswith("#run/0/lesion/" + worst.replace(":", "%3A").replace(",", "%2C"))
    after, _ = run.correct(worst)
    facts = {b.get_attribute("data-field"): b.text for b in view.find_elements(By.CSS_SELECTOR, ".facts b")}
    assert facts["d1"] == f"{100 * (after.mean() - before.mean()):+.2f} pp"
    assert facts["lost"] == str(int((before & ~after).sum())) and facts["gained"] == str(int((~before & after).sum()))
    rows = wait_for(lambda: view.find_elements(By.CSS_SELECTOR, ".lesion-classes .tabulator-row"))
    shown_classes = {}
    for r in rows:
        cells = {c.get_attribute("tabulator-field"): c.text for c in r.find_elements(By.CSS_SELECTOR, ".tabulator-cell")}
        shown_classes[cells["cls"]] = (int(cells["correct"]), int(cells["lost"]), int(cells["gained"]))
    for c, name in enumerate(run.class_names):
        in_c = labels == c
        expected = (int(after[in_c].sum()), int((before & ~after)[in_c].sum()), int((~before & after)[in_c].sum()))
        assert shown_classes[name] == expected, name
    thumbs = view.find_elements(By.CSS_SELECTOR, ".thumb")
    lost_samples = set(np.flatnonzero(before & ~after).tolist()) | set(np.flatnonzero(~before & after).tolist())
    assert thumbs and all(int(t.get_attribute("data-sample")) in lost_samples for t in thumbs)
    assert severe_logs(browser) == []

    shot = tmp_path / "report.png"
    browser.set_window_size(1280, 2400)  # the whole run page: table, heatmap and the open lesion view
    browser.execute_script("window.scrollTo(0, 0); document.querySelector('.lesion-table .tabulator-tableholder').scrollLeft = 0")
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("LESION_REPORT_SCREENSHOT"):
        from PIL import Image

        image = Image.open(shot).convert("RGB").quantize(colors=128)
        image.save(os.environ["LESION_REPORT_SCREENSHOT"], optimize=True)
    run.close()


@pytest.fixture(scope="module")
def search_reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Reports of a tiny real Shapley run and a tiny real improve folder (the toy network; tests/fixtures/search_runs.py)."""
    from fixtures.search_runs import improve_folder, shapley_run

    base = tmp_path_factory.mktemp("search")
    return write_report(shapley_run(base / "shapley")), write_report(improve_folder(base / "improve"))


def cells(driver: Any, table: str, field: str) -> list[str]:
    selector = f"{table} .tabulator-row .tabulator-cell[tabulator-field='{field}']"
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map((c) => c.textContent.trim())", selector)


def test_shapley_and_improve_views_in_chromium(browser: Any, search_reports: tuple[Path, Path]) -> None:
    import pandas as pd

    shapley_report, improve_report = search_reports
    run = Run(shapley_report.parent)
    top1 = run.table("top1")
    stored = pd.read_csv(shapley_report.parent / "shapley.csv").set_index(["player", "class", "metric"])

    browser.get(shapley_report.resolve().as_uri())  # a Shapley run opens on its Shapley view
    table = "#view-shapley-0 .shapley-table"
    assert wait_for(lambda: len(cells(browser, table, "player")) == 5)
    assert browser.execute_script("return lesionReport.view") == "view-shapley-0"
    players = cells(browser, table, "player")
    shown = dict(zip(players, cells(browser, table, "value"), strict=True))
    single = dict(zip(players, cells(browser, table, "single"), strict=True))
    for player in players:
        assert float(shown[player]) == pytest.approx(100 * stored.loc[(player, -1, "top1"), "value"], abs=0.005)
        assert float(single[player]) == pytest.approx(100 * (top1.loc["intact", "all"] - top1.loc[player, "all"]), abs=0.005)  # the database's single lesion
    values = [float(v) for v in cells(browser, table, "value")]
    assert values == sorted(values, reverse=True)
    facts = {b.get_attribute("data-field"): b.text for b in browser.find_elements(By.CSS_SELECTOR, "#view-shapley-0 .facts b")}
    assert facts["permutations"] == f"{run.meta('shapley:permutations')} sampled"
    # another class: chart and tables follow the selector
    browser.execute_script("const s = document.querySelector('#view-shapley-0 .shapley-column'); s.value = '2'; s.dispatchEvent(new Event('change'))")
    name = run.class_names[1]
    want = {p: pytest.approx(100 * stored.loc[(p, 1, "top1"), "value"], abs=0.0051) for p in players}
    assert wait_for(lambda: {p: float(v) for p, v in zip(cells(browser, table, "player"), cells(browser, table, "value"), strict=True)} == want)
    assert name in browser.execute_script("return lesionReport.charts['shapley-0'].getOption().title[0].text")
    interaction = pd.read_csv(shapley_report.parent / "interactions.csv").set_index(["class", "metric"]).loc[(1, "top1"), "value"]
    assert [float(v) for v in cells(browser, "#view-shapley-0 .shapley-pairs", "value")] == [pytest.approx(100 * interaction, abs=0.005)]
    assert severe_logs(browser) == []
    run.close()

    browser.get(improve_report.resolve().as_uri())  # an improve folder opens on its improve view
    table = "#view-improve-0 .improve-table"
    assert wait_for(lambda: cells(browser, table, "name"))
    test_run = Run(improve_report.parent / "test")
    before, after = test_run.correct("intact")[0], test_run.correct("hidden:4")[0]
    rows = dict(zip(cells(browser, table, "name"), cells(browser, table, "tc"), strict=True))
    assert float(rows["all"]) == pytest.approx(100 * (after.mean() - before.mean()), abs=0.005)
    assert "Chosen on validation only" in browser.find_element(By.CSS_SELECTOR, "#view-improve-0 .discipline").text
    assert severe_logs(browser) == []
    test_run.close()
