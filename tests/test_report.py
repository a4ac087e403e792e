"""cnnzoo report: one self-contained page, checked as a file and in a real browser (headless Chromium).

The page is made for LeNet-5 trained for one epoch on the embedded 5,000 MNIST digits (the run folder of
``cnnzoo train lenet5``), on held-out digits. Its numbers are checked against the rooms that made them
(summary, predict) and against the receptive fields worked out by hand; then Chromium opens it without
any network, and the test clicks layers the way a reader does and measures the square drawn.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-separated JSON
on file descriptors 3 and 4), so no port is opened and no extra package is needed. Without a Chromium
the browser tests are skipped, saying so; ``.ci/run`` installs Debian's ``chromium`` so CI always runs them.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data import load_mnist5k
from cnnzoo.predict import predict_images
from cnnzoo.report import load_subject, report
from cnnzoo.shapes import receptive_fields
from cnnzoo.summary import summary
from cnnzoo.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

# The receptive fields of LeNet-5 on 28x28 by hand: conv1 5x5/1 sees 5; pool1 2x2/2 adds (2-1)*1 -> 6, jump 2;
# conv2 5x5/1 adds (5-1)*2 -> 14; pool2 2x2/2 adds (2-1)*2 -> 16, jump 4; the classifier sees the whole map
# pool2 came from: 16 + (5-1)*4 = 32 (more than the 28 pixels: its square is clipped to the image).
LENET_FIELDS = {
    "features.conv1": 5,
    "features.pool1": 6,
    "features.conv2": 14,
    "features.pool2": 16,
    "classifier.fc3": 32,
}
VIEWPORT = (1400, 900)


# --- the page -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenet_page(tmp_path_factory):
    """A run folder of LeNet-5 after one epoch on mnist5k, four held-out digits as PNG files, and its report."""
    root = tmp_path_factory.mktemp("report")
    run = root / "run"
    train(TrainConfig(model="lenet5", epochs=1, out=str(run), progress=False, seed=0))
    _, test = load_mnist5k()
    files = []
    for index in (30, 350, 720, 960):  # the test split is ordered by class: four different digits
        image, label = test[index]
        files.append(root / f"digit_{label}.png")
        Image.fromarray(image[0].numpy()).save(files[-1])
    page = report(str(run), [str(f) for f in files], device="cpu")
    path = page.save(root / "lenet5.html")
    return dict(run=run, files=files, page=page, path=path)


class _Parsed(HTMLParser):
    """Every tag with its attributes, and the text of <script> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in_script: dict | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = dict(attrs)
            self.scripts.append((self._in_script, ""))

    def handle_data(self, data):
        if self._in_script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None


def _parse(text: str) -> _Parsed:
    parsed = _Parsed()
    parsed.feed(text)
    return parsed


def test_the_page_is_one_file_that_fetches_nothing(lenet_page):
    text = lenet_page["path"].read_text(encoding="utf-8")
    parsed = _parse(text)
    for tag, attrs in parsed.tags:
        assert "src" not in attrs or attrs["src"].startswith("data:image/png;base64,"), (tag, attrs.get("src", "")[:60])
        assert "href" not in attrs or attrs["href"].startswith("#"), (tag, attrs["href"])
        assert tag not in ("link", "iframe", "object", "embed"), tag
    # The only URLs in the file are the SVG namespace, which names the vocabulary and is never fetched.
    urls = re.findall(r"(?:https?|ftp)://[^\s\"'<>)]+", text)
    assert set(urls) <= {"http://www.w3.org/2000/svg"}, set(urls)
    assert "url(" not in text and "@import" not in text
    for _, attrs in parsed.tags:
        if attrs.get("src"):
            with Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1]))) as image:
                image.verify()  # every inline picture is a whole PNG


def test_the_page_has_every_part(lenet_page):
    parsed = _parse(lenet_page["page"].html)
    ids = {attrs.get("id") for _, attrs in parsed.tags}
    assert {"diagram", "layers", "walk", "filters", "images", "rf-panel", "rf-square"} <= ids
    assert sum(1 for tag, _ in parsed.tags if tag == "svg") == 1  # the diagram, inline
    images = [a for t, a in parsed.tags if t == "img" and "class" in a]
    kinds = [a["class"] for a in images]
    assert kinds.count("overlay") == 4 and kinds.count("maps") == 4 and kinds.count("filters") == 1
    assert kinds.count("rf-thumb") == 4
    summary_rows = [a["data-layer"] for t, a in parsed.tags if t == "tr" and a.get("data-layer")]
    s = summary(load_subject(str(lenet_page["run"]), device="cpu").model, (1, 28, 28))
    assert summary_rows[: len(s.rows)] == [r.name for r in s.rows]  # the Keras-style table, then the shape walk
    assert "OH = OW = (14 + 2*0 - 5)/1 + 1 = 10" in lenet_page["page"].html  # conv2's formula in the walk
    assert len(lenet_page["path"].read_bytes()) < 2_000_000


def test_the_embedded_layer_data_are_the_summarys_and_the_hand_computed_fields(lenet_page):
    parsed = _parse(lenet_page["page"].html)
    (data_text,) = [text for attrs, text in parsed.scripts if attrs.get("id") == "cnnzoo-data"]
    data = json.loads(data_text)
    assert data["input"] == [1, 28, 28]
    model = load_subject(str(lenet_page["run"]), device="cpu").model
    for row in summary(model, (1, 28, 28)).rows:
        layer = data["layers"][row.name]
        assert layer["shape"] == list(row.output_shape[1:])
        assert layer["rf"] == (list(row.receptive_field) if row.receptive_field else None)
    for name, field in LENET_FIELDS.items():
        assert data["layers"][name]["rf"] == [field, field], name
    # the diagram's boxes name layers the data know
    boxes = [a["data-layer"] for t, a in parsed.tags if t == "g" and "box" in (a.get("class") or "")]
    assert boxes and set(boxes) <= set(data["layers"])


def test_the_top5_on_the_page_are_what_predict_says(lenet_page):
    expected = predict_images(str(lenet_page["run"]), [str(f) for f in lenet_page["files"]], topk=5, device="cpu")
    html = lenet_page["page"].html
    for record in expected:
        article = html.split(f"<h3>{Path(record['image']).name}</h3>", 1)[1].split("</article>", 1)[0]
        labels = re.findall(r"<span class='label'>([^<]*)</span><span class='prob'>([\d.]+)%</span>", article)
        assert [name for name, _ in labels] == [name for name, _ in record["top"]]
        assert [float(p) for _, p in labels] == pytest.approx([100 * p for _, p in record["top"]], abs=0.051)


def test_a_users_own_module(tmp_path):
    """Any nn.Module, not only the zoo's: its receptive fields from shapes.receptive_fields, its modes left alone."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(16, 4),
    ).train()  # fmt: skip
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(image)
    page = report(model, [str(image)], image_size=32)
    expected = [f.receptive_field for f in receptive_fields([(3, 1), (2, 2), (3, 2)])]
    assert (
        [page.layers[name]["rf"] for name in ("0", "2", "3")] == [[e, e] for e in expected] == [[3, 3], [4, 4], [8, 8]]
    )
    assert page.layers["3"]["shape"] == [16, 7, 7]  # (16 - 3)/2 + 1 = 7.5, rounded down
    assert all(m.training for m in model.modules())
    assert page.html.count("<article class='image'") == 1 and "class 0" in page.html  # no class names: indices


# --- the browser ----------------------------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


class Browser:
    """Headless Chromium on a DevTools pipe: commands to one page, events collected as they come."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_chromium, from_chromium = os.pipe(), os.pipe()
        # Chromium reads fd 3 and writes fd 4. The pipe ends are moved above 9 first, so that bash's
        # redirections below (3<&A 4>&B) cannot overwrite one with the other.
        a = fcntl.fcntl(to_chromium[0], fcntl.F_DUPFD_CLOEXEC, 10)
        b = fcntl.fcntl(from_chromium[1], fcntl.F_DUPFD_CLOEXEC, 10)
        for fd in (to_chromium[0], from_chromium[1]):
            os.close(fd)
        args = [
            executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
            "--disable-extensions", f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank",
        ]  # fmt: skip
        self.log = open(profile.parent / "chromium.log", "w")  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{a} 4>&{b} {a}<&- {b}>&-', *args],
            pass_fds=(a, b), stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
        )  # fmt: skip
        os.close(a)
        os.close(b)
        self.write, self.read = to_chromium[1], from_chromium[0]
        self.buffer, self.next_id, self.events, self.session = b"", 0, [], None

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.read, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, timeout: float = 30.0, **params) -> dict:
        """Send one command (to the page once attached) and return its result; events meanwhile are kept."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self.write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            seen = next((e for e in self.events if e["method"] == method), None)
            if seen is not None:
                return seen
            reply = self._receive(deadline)
            if "method" in reply:
                self.events.append(reply)

    def open(self, url: str, viewport: tuple[int, int]) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=viewport[0], height=viewport[1], deviceScaleFactor=1,
                  mobile=False)  # fmt: skip
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, x: float, y: float) -> None:
        """A real mouse click (move, press, release) at viewport coordinates."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def click_element(self, selector: str) -> None:
        js = f"""(() => {{ const el = document.querySelector({json.dumps(selector)});
            el.scrollIntoView({{block: "center"}}); const r = el.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2]; }})()"""
        x, y = self.evaluate(js)
        self.click(x, y)

    def close(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, EOFError, RuntimeError):  # it may be gone already
            self.call("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self.write, self.read):
            os.close(fd)
        self.log.close()


@pytest.fixture(scope="module")
def browser(lenet_page, tmp_path_factory):
    executable = _chromium()
    if executable is None:
        pytest.skip(
            "no Chromium found (chromium, chromium-browser, google-chrome): apt-get install chromium; .ci/run does"
        )
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to hand Chromium its DevTools pipe on file descriptors 3 and 4")
    b = Browser(executable, tmp_path_factory.mktemp("chromium") / "profile")
    try:
        b.open(lenet_page["path"].resolve().as_uri(), VIEWPORT)
        b.evaluate("new Promise(done => { const p = document.getElementById('rf-picture'); "
                   "p.complete ? done(true) : p.addEventListener('load', () => done(true)); })")  # fmt: skip
        yield b
    finally:
        b.close()


def _problems(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and error log entries (a CSP violation, a failed load) among the events."""
    found = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.exceptionThrown":
            found.append(f"exception: {p['exceptionDetails'].get('text')} {p['exceptionDetails'].get('exception', {})}")
        elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            found.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
        elif e["method"] == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            found.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return found


def _square(browser: Browser) -> dict:
    return browser.evaluate("""(() => { const s = document.getElementById('rf-square');
        const v = document.getElementById('rf-view').getBoundingClientRect(); const r = s.getBoundingClientRect();
        return {hidden: s.hidden, width: r.width, height: r.height, left: r.left - v.left, top: r.top - v.top,
                scale: v.width / 28, layer: document.getElementById('rf-layer').textContent}; })()""")


def _span(centre: int, field: int, size: int = 28) -> tuple[int, int]:
    """The input pixels [lo, hi) that a field of ``field`` pixels centred on pixel ``centre`` covers, clipped to the
    image: the rule the page's script must follow, written here on its own."""
    lo = centre - (field - 1) // 2
    return max(0, lo), min(size, lo + field)


def test_the_page_loads_without_errors_or_requests(browser, lenet_page):
    page_url = lenet_page["path"].resolve().as_uri()
    problems = _problems(browser.events)
    assert not problems, problems
    requests = [e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"]
    assert page_url in requests
    assert all(url == page_url or url.startswith("data:") for url in requests), requests
    assert browser.evaluate("document.querySelectorAll('#diagram svg g.box').length") >= 8
    assert browser.evaluate("document.getElementById('rf-square').hidden") is True  # nothing selected yet


@pytest.mark.parametrize(
    "selector, layer",
    [
        ("#layers tr[data-layer='features.conv1']", "features.conv1"),
        ("#walk tr[data-layer='features.pool1']", "features.pool1"),
        ("#layers tr[data-layer='features.conv2']", "features.conv2"),
        ("#diagram g.box[data-layer='features.pool2']", "features.pool2"),
    ],
)
def test_clicking_a_layer_draws_its_receptive_field(browser, selector, layer):
    browser.click_element(selector)
    sq = _square(browser)
    field = LENET_FIELDS[layer]
    lo, hi = _span(14, field)  # centred on the centre pixel (14, 14) until the picture is clicked
    assert not sq["hidden"] and sq["layer"].startswith(layer)
    assert sq["width"] == pytest.approx((hi - lo) * sq["scale"], abs=0.6)
    assert sq["height"] == pytest.approx((hi - lo) * sq["scale"], abs=0.6)
    assert sq["left"] == pytest.approx(lo * sq["scale"], abs=0.6)
    assert browser.evaluate(f"document.querySelector({json.dumps(selector)}).classList.contains('selected')")


def test_the_square_follows_a_click_on_the_picture_and_is_clipped_to_it(browser, tmp_path):
    browser.click_element("#layers tr[data-layer='features.conv2']")
    view = browser.evaluate("(() => { const r = document.getElementById('rf-view').getBoundingClientRect(); "
                            "return [r.left, r.top, r.width / 28]; })()")  # fmt: skip
    left, top, scale = view
    browser.click(left + 0.5 * scale, top + 0.5 * scale)  # pixel (0, 0): the field runs off the top left
    sq = _square(browser)
    lo, hi = _span(0, LENET_FIELDS["features.conv2"])
    assert (lo, hi) == (0, 8)
    assert (sq["left"], sq["top"]) == (pytest.approx(0, abs=0.6), pytest.approx(0, abs=0.6))
    assert sq["width"] == pytest.approx(hi * scale, abs=0.6) and sq["height"] == pytest.approx(hi * scale, abs=0.6)
    browser.click_element(
        "#layers tr[data-layer='classifier.fc3']"
    )  # sees more than the image: clipped, pinned at (0, 0)
    sq = _square(browser)
    assert sq["width"] == pytest.approx(_span(0, 32)[1] * scale, abs=0.6)
    browser.click(left + 14.5 * scale, top + 14.5 * scale)  # back to the centre: the whole 28x28 image
    sq = _square(browser)
    assert sq["width"] == pytest.approx(28 * scale, abs=0.6) and sq["height"] == pytest.approx(28 * scale, abs=0.6)
    assert not _problems(browser.events), _problems(browser.events)


def test_a_screenshot_of_the_page(browser, tmp_path):
    browser.click_element("#diagram g.box[data-layer='features.pool2']")
    browser.evaluate("window.scrollTo(0, 0)")
    shot = browser.call("Page.captureScreenshot", format="png")
    path = tmp_path / "report.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    out = os.environ.get("CNNZOO_SCREENSHOT")  # where to keep a copy to look at (docs/images is made this way)
    if out:
        shutil.copyfile(path, out)
    with Image.open(path) as image:
        assert image.size == VIEWPORT
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3)
    assert pixels.std(0).min() > 10  # a drawn page, not a blank one
