"""Make the README's "See why" pictures: a CAM overlay and a screenshot of a report, from a trained LeNet-5.

    cnnzoo train lenet5 --epochs 10 --out runs/lenet5   # 97.4% on the held-out digits (the committed pictures)
    python docs/images/make_see_why.py runs/lenet5      # writes docs/images/cam_lenet5.png and report_lenet5.png

The digits are held-out images of the embedded 5,000-digit MNIST subset, written as PNG files first, so
that the commands run as a user runs them (``cnnzoo cam``, ``cnnzoo report``). The screenshot is taken by
the same headless-Chromium driver as ``tests/test_report.py``, after a click on a layer of the diagram.
Each picture is stored as an optimised PNG; one over 300 KB would be stored with a 256-colour palette.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from PIL import Image, ImageChops  # noqa: E402
from tests.test_report import Browser, _chromium  # noqa: E402

from cnnzoo.cli import main as cnnzoo  # noqa: E402
from cnnzoo.data import load_mnist5k  # noqa: E402

HERE = Path(__file__).resolve().parent
DIGITS = (30, 250, 350, 960)  # held-out 0, 2, 3 and 9 (the test split is ordered by class); the CAM shows the 2
VIEWPORT = (1400, 900)


def _store(source: Path, dest: Path, limit: int = 300_000, margin: int = 8) -> None:
    """RGB, its white border cut to ``margin`` pixels, optimised; with a palette only when that is still too large
    (a palette bands grey digits)."""
    with Image.open(source) as image:
        rgb = image.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, "white")).getbbox()
    if box is not None:
        left, top, right, bottom = box
        rgb = rgb.crop(
            (
                max(0, left - margin),
                max(0, top - margin),
                min(rgb.width, right + margin),
                min(rgb.height, bottom + margin),
            )
        )
    rgb.save(dest, optimize=True)
    if dest.stat().st_size > limit:
        rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)


def _screenshot(page: Path, out: Path, click: str) -> None:
    executable = _chromium()
    if executable is None:
        raise SystemExit("no Chromium found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        browser = Browser(executable, Path(tmp) / "profile")
        try:
            browser.open(page.resolve().as_uri(), VIEWPORT)
            browser.click_element(click)
            browser.evaluate("window.scrollTo(0, 0)")
            shot = browser.call("Page.captureScreenshot", format="png")
        finally:
            browser.close()
        raw = Path(tmp) / "shot.png"
        raw.write_bytes(base64.b64decode(shot["data"]))
        _store(raw, out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run folder of cnnzoo train lenet5")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # Work in a copy at runs/lenet5, so that the page names that, not a path of this machine.
        shutil.copytree(args.run, folder / "runs" / "lenet5")
        os.chdir(folder)
        run = "runs/lenet5"
        _, test = load_mnist5k()
        files = []
        for index in DIGITS:
            image, label = test[index]
            files.append(folder / f"digit_{label}.png")
            Image.fromarray(image[0].numpy()).save(files[-1])
        if cnnzoo(["cam", run, str(files[1]), "--out", str(folder / "cams")]) != 0:
            return 1
        _store(folder / "cams" / f"{files[1].stem}_gradcam.png", HERE / "cam_lenet5.png")
        page = folder / "report.html"
        if cnnzoo(["report", run, "--image", *(f.name for f in files), "--out", str(page)]) != 0:
            return 1
        _screenshot(page, HERE / "report_lenet5.png", "#diagram g.box[data-layer='features.relu2']")
    for name in ("cam_lenet5.png", "report_lenet5.png"):
        print(f"wrote {HERE / name} ({(HERE / name).stat().st_size / 1e3:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
