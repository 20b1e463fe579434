"""The web UI end to end in a real headless browser: Debian's chromium (/usr/bin/chromium, `make browser`)
driven by Playwright, against `streamlit run ui/app.py` and the real services (tiny model). It starts a run
from the New run page, watches the loss chart update without the page reloading, and opens the Compare
page; then it visits every page. With PEFTLAB_SCREENSHOTS=<dir> it saves a screenshot of each page there
(docs/screenshots/ holds the README's)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from playwright import sync_api

CHROMIUM = os.environ.get("PEFTLAB_CHROMIUM", "/usr/bin/chromium")  # Debian's package; elsewhere, point it
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]
WIDTH = 1400

if not Path(CHROMIUM).exists():
    pytest.fail(f"{CHROMIUM} missing: run `make browser` (make test does)", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui_url(ui_stack, tmp_path_factory):
    port = _free_port()
    env = {**os.environ, "PEFTLAB_GATEWAY": ui_stack.gateway.address}
    env.pop("PEFTLAB_API_TOKEN", None)
    log = open(tmp_path_factory.mktemp("streamlit") / "ui.log", "wb")
    from services import launcher

    # The UI exactly as `make run` starts it (its flags: headless, no Deploy menu), on a free port.
    (ui,) = [service for service in launcher.services() if service.name == "ui"]
    command = list(ui.command)
    command[command.index("--server.port") + 1] = str(port)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"streamlit did not start; see {log.name}")
        time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(10)
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": WIDTH, "height": 1000},
            # make test preloads OpenBLAS for MLX; chromium's zygote dies with it (GPU process unusable).
            env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"},
            timeout=60_000,
        )
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.set_default_timeout(60_000)
    yield page
    page.close()


def _settled(page, timeout_ms: int = 60_000) -> None:
    """Wait until the script run (not the fragments' refreshes) is done and nothing shows an exception."""
    page.wait_for_selector('[data-testid="stAppViewContainer"]')
    page.wait_for_timeout(500)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=timeout_ms)
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]'
    ).first.inner_text()


def _choose(page, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.get_by_role("option", name=re.compile(rf"^{re.escape(option)}\b")).first.click()
    _settled(page)


def _number(page, label: str, value: float) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    _settled(page)


def _screenshot(page, name: str) -> None:
    """The whole page (Streamlit scrolls inside its main block, so the window grows to fit it)."""
    where = os.environ.get("PEFTLAB_SCREENSHOTS")
    if not where:
        return
    page.wait_for_timeout(1000)
    height = page.evaluate(
        """() => Math.max(...['stMain', 'stMainBlockContainer'].map(
              id => document.querySelector(`[data-testid="${id}"]`)?.scrollHeight || 0))"""
    )
    page.set_viewport_size({"width": WIDTH, "height": min(int(height) + 80, 3200)})
    page.wait_for_timeout(1500)
    Path(where).mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(Path(where) / f"{name}.png"))
    page.set_viewport_size({"width": WIDTH, "height": 1000})


def _metric(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text()


def test_start_a_run_watch_it_live_and_open_compare(ui_url, page, ui_finished_run):
    page.goto(f"{ui_url}/new_run")
    _settled(page)
    _choose(page, "Model", "tiny-llama")
    _choose(page, "Dataset", "chat")
    _number(page, "Steps", 300)
    _number(page, "Max sequence length", 64)
    page.get_by_text("More settings").click()
    _number(page, "Validate every (steps)", 10)
    _number(page, "Test samples scored", 0)
    page.get_by_label("Run name (optional)").fill("browser run")
    page.get_by_label("Run name (optional)").press("Enter")
    _settled(page)
    _screenshot(page, "new-run")
    page.get_by_role("button", name="Start run").click()

    page.wait_for_url(re.compile(r"/run\?run=r-"))
    try:
        page.wait_for_selector('[data-testid="stVegaLiteChart"]', timeout=120_000)
    except sync_api.TimeoutError:
        main = page.locator('[data-testid="stMainBlockContainer"]').inner_text()
        raise AssertionError(f"no loss chart after 120 s; the page says:\n{main}") from None
    page.evaluate("window.__no_reload = true")  # gone if anything reloaded the page
    first = int(_metric(page, "step").split("/")[0])
    page.wait_for_function(
        """(first) => [...document.querySelectorAll('[data-testid="stMetric"]')]
             .some(m => m.innerText.startsWith('step') && parseInt(m.innerText.match(/(\\d+)\\//)[1]) > first + 2)""",
        arg=first,
        timeout=120_000,
    )
    if os.environ.get("PEFTLAB_SCREENSHOTS"):  # a longer curve for the README
        page.wait_for_function(
            """() => [...document.querySelectorAll('[data-testid="stMetric"]')]
                 .some(m => m.innerText.startsWith('step') && parseInt(m.innerText.match(/(\\d+)\\//)[1]) >= 60)""",
            timeout=300_000,
        )
    assert page.evaluate("window.__no_reload") is True
    assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 4  # loss, perplexity, tokens/s, memory
    assert "browser run" in page.locator('[data-testid="stMainBlockContainer"]').inner_text()
    _screenshot(page, "run")
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("CANCELLED").first.wait_for(timeout=120_000)

    page.get_by_role("link", name="Compare").click()
    page.wait_for_url(re.compile(r"/compare"))
    page.get_by_role("heading", name="Compare methods").first.wait_for()
    _settled(page)
    page.get_by_text("New comparison").first.wait_for()


def test_a_run_page_opened_while_queued_follows_the_run_to_running(ui_url, page, ui_stack):
    """The header (status, trainer) and the queued banner refresh with the charts: a page opened while its run
    waited for the pool's one slot shows RUNNING once it trains, without a reload."""
    from peftlab.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, trainer_pb2
    from service_helpers import wait_for

    from services.common.codec import spec_to_proto

    stub = gateway_pb2_grpc.GatewayStub(ui_stack.gateway.channel)
    spec = {"model": "tiny-llama", "data": "chat", "iters": 400, "warmup_steps": 0, "eval_every": 0}
    spec |= {"batch_size": 2, "max_seq_length": 64, "test_samples": 0, "save_every": 0, "rank": 4}

    def submit(name: str) -> str:
        request = gateway_pb2.SubmitRunRequest(spec=spec_to_proto(spec), name=name)
        return stub.SubmitRun(request, timeout=30).run.id

    def status(run_id: str) -> int:
        return stub.GetRun(trainer_pb2.GetRunRequest(run_id=run_id), timeout=10).run.status

    ended = {common_pb2.RUN_STATUS_CANCELLED, common_pb2.RUN_STATUS_SUCCEEDED, common_pb2.RUN_STATUS_FAILED}

    def cancel_and_wait(run_id: str) -> None:
        if status(run_id) not in ended:
            stub.CancelRun(trainer_pb2.CancelRunRequest(run_id=run_id), timeout=30)
        wait_for(lambda: status(run_id) in ended, timeout=180, what=f"run {run_id} to end")

    first = submit("holds the slot")
    queued = None
    try:
        wait_for(lambda: status(first) == common_pb2.RUN_STATUS_RUNNING, timeout=120, what="the first run")
        queued = submit("queued browser run")
        assert status(queued) == common_pb2.RUN_STATUS_QUEUED
        page.goto(f"{ui_url}/run?run={queued}")
        _settled(page)
        heading = page.locator("h3").filter(has_text="queued browser run").first
        assert "QUEUED" in heading.inner_text()
        page.get_by_text("Queued: it starts").first.wait_for()
        page.evaluate("window.__no_reload = true")
        cancel_and_wait(first)  # frees the slot: the queued run starts
        heading.filter(has_text="RUNNING").wait_for(timeout=180_000)
        page.get_by_text("Queued: it starts").first.wait_for(state="detached", timeout=30_000)
        assert page.evaluate("window.__no_reload") is True
        header = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text="queued browser run")
        assert ui_stack.trainer.core.id in header.first.inner_text()
    finally:
        for run_id in (first, queued):
            if run_id:
                cancel_and_wait(run_id)


@pytest.mark.parametrize(
    ("path", "heading"),
    [
        ("", "peftlab"),
        ("run", "Run"),
        ("compare", "Compare methods"),
        ("study", "Hyperparameter study"),
        ("playground", "Playground"),
    ],
)
def test_every_page_renders_in_the_browser(ui_url, page, ui_finished_run, path, heading):
    page.goto(f"{ui_url}/{path}" + (f"?run={ui_finished_run.id}" if path == "run" else ""))
    page.get_by_role("heading", name=heading).first.wait_for()
    _settled(page)
    if path == "playground":
        page.get_by_role("button", name="Generate").click()
        _settled(page, timeout_ms=120_000)
        page.wait_for_function(
            """() => { const boxes = [...document.querySelectorAll('[data-testid="stCode"]')];
                        return boxes.length >= 2 && boxes.every(b => b.innerText.trim() && !b.innerText.includes('▌')); }"""
        )
    if path == "run":
        page.get_by_text("Final metrics").wait_for()
    assert page.get_by_text("Deploy", exact=True).count() == 0  # toolbarMode minimal, as in make run
    _screenshot(page, {"": "home", "run": "run-finished"}.get(path, path))


def test_upload_a_dataset_problems_by_line_then_saved(ui_url, page, ui_stack, tmp_path):
    rows = (ui_stack.data_root / "chat" / "train.jsonl").read_text().splitlines()
    bad, good, valid = tmp_path / "bad.jsonl", tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    bad.write_text("\n".join([rows[0], "{broken", rows[1]]) + "\n")
    good.write_text("\n".join(rows[:20]) + "\n")
    valid.write_text("\n".join(rows[20:25]) + "\n")
    page.goto(f"{ui_url}/new_run")
    _settled(page)
    page.get_by_role("tab", name="Upload JSONL").click()
    page.get_by_label("Name of the new dataset").fill("from-browser")
    page.get_by_label("Name of the new dataset").press("Enter")
    _settled(page)

    def upload(split: str, path: Path) -> None:
        uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text=f"{split}.jsonl")
        uploader.locator('input[type="file"]').set_input_files(str(path))
        _settled(page)

    upload("train", bad)
    upload("valid", valid)
    page.get_by_role("button", name="Check and save").click()
    page.get_by_text("Not saved: 1 problem(s)").wait_for()
    _settled(page)
    assert not (ui_stack.data_root / "from-browser").exists()
    upload("train", good)
    page.get_by_role("button", name="Check and save").click()
    page.get_by_text("Saved dataset").wait_for()
    _settled(page)
    assert (ui_stack.data_root / "from-browser" / "train.jsonl").read_text() == good.read_text()
    page.get_by_role("tab", name="Pick a dataset").click()  # the new dataset is selected and checked there
    page.get_by_text("Every line checks out: train 20, valid 5 rows").wait_for()
