"""``swavbench dashboard`` in a real headless browser (Debian's Chromium, driven by Selenium): a small run
starts after the page is open; the page shows its job running, then done with its metric, and the
pretraining curves, without reloading. Nothing can be changed from it."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request

import pytest
import yaml

from pretrain.config import load_config
from pretrain.train import pretrain
from slurm.launch import Launcher
from slurm.suite import load_suite
from swavbench.dashboard import make_server


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(
            "Chromium and its driver are not installed: run tests/install-browser.sh (README test command)"
        )
    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    web = webdriver.Chrome(service=Service(driver), options=options)
    yield web
    web.quit()


def wait_for(web, condition, timeout: float = 120.0, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(web, timeout, poll_frequency=0.2).until(lambda d: condition(d), message=what)


def job_states(web) -> list[str]:
    return web.execute_script("return [...document.querySelectorAll('tr.job')].map(r => r.dataset.state)")


def test_the_page_follows_a_run_live_and_is_read_only(tmp_path, generated_data, browser):
    root = tmp_path / "runs"
    root.mkdir()
    server = make_server(root, port=0, interval=0.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        assert server.server_address[0] == "127.0.0.1"  # loopback unless asked
        browser.get(url)
        wait_for(browser, lambda d: d.find_element("id", "updated").text != "never", what="first update")
        assert browser.find_element("id", "empty").is_displayed()
        browser.execute_script("window.kept = 42")  # survives only if the page never reloads

        run = root / "demo"  # a small run: a tiny pretraining, then a kNN evaluation of it as a local job
        pretrain(load_config("tiny", [f"data.path={generated_data}"]), run / "pretrain", progress=False)
        g = generated_data.parent
        suite = {
            "name": "live",
            "jobs": [
                {
                    "protocol": "knn",
                    "preset": "knn-cifar10-small",
                    "overrides": [f"train={g / 'train'}", f"val={g / 'val'}", "num_workers=0"],
                    "resources": {"cpus": 1, "mem_gb": 1, "time_min": 10},
                }
            ],
        }
        (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
        with Launcher(run, "local") as launcher:
            launcher.suite(load_suite(str(tmp_path / "suite.yaml")), str(run / "pretrain" / "checkpoint.pth"))
            wait_for(browser, lambda d: "running" in job_states(d), what="the job shown running")
            launcher.wait()
        wait_for(browser, lambda d: job_states(d) == ["done"], what="the job shown done")
        (record,) = run.glob("evals/*/result.json")
        value = json.loads(record.read_text())["metrics"]["k20_top1"]
        wait_for(browser, lambda d: f"{value:.2f}" in d.find_element("id", "runs").text, what="its metric")
        assert "knn" in browser.find_element("id", "runs").text
        assert len(browser.find_elements("css selector", "svg.curve")) == 3  # loss, lr, images / s
        assert browser.execute_script("return window.kept") == 42  # updated in place, never reloaded
        for method in ("POST", "DELETE"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(url + "api/state", method=method, data=b"x"))
            assert refused.value.code == 405
        with pytest.raises(urllib.error.HTTPError) as outside:  # only files under ROOT are served
            urllib.request.urlopen(url + "files/../../etc/passwd")
        assert outside.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_a_sweep_is_shown_as_a_heat_map_with_the_reports_numbers(tmp_path):
    """A sweep run (several pretrainings): its variants' table as the report builds it, each column shaded
    from its lowest (lightest) to its best value."""
    import re

    from handmade_records import record

    from swavbench.dashboard import state

    run = tmp_path / "runs" / "sweep"
    jobs = {}
    for i, (variant, top1) in enumerate((("n_prototypes=30", 60.0), ("n_prototypes=100", 64.0))):
        d = run / "evals" / variant
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(record("linear", "imagenet", {"top1": top1}, variant)))
        jobs[f"p{i}"] = {
            "name": variant,
            "kind": "pretrain",
            "out_dir": str(run / variant),
            "executor": "debug",
        }
    (run / "launch.json").write_text(json.dumps({"jobs": jobs}))
    (view,) = state(tmp_path / "runs")["runs"]
    assert view["id"] == "sweep" and view["html"].startswith("<h2>sweep sweep")
    sweep = view["html"].split("<table class='sweep'>")[1].split("</table>")[0]
    shades = {
        name: float(alpha)
        for name, alpha in re.findall(r"<tr><td>(n_prototypes=\d+)</td>.*?rgba\(46,125,50,([\d.]+)\)", sweep)
    }
    assert shades == {"n_prototypes=30": 0.1, "n_prototypes=100": 0.7}  # lowest and best of the column
    assert "64.0" in sweep and "60.0" in sweep
