"""A folder of synthetic JPEGs in the ImageNet layout, to measure the folder pipeline where no data set is.

    python benchmarks/jpeg_folder.py /tmp/jpegs --n 1024 --side 320
    python benchmarks/jpeg_folder.py /tmp/imagenet-like --n 3072 --side 375 --width 500 --noise 10
    cnnzoo bench --data folder:/tmp/jpegs --workers 2 --batch-size 64 --input 224

Images are smooth (a coarse random grid, upsampled bicubically), so they compress and decode like
photographs rather than like noise; ``noise`` adds grain, which makes files bigger and slower to decode
(375x500 with noise 10: about 75 KiB at quality 90, near an average ImageNet photo's 110 KiB). Each
image is written to train/ and to val/, in 4 classes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torchvision.io import encode_jpeg


def make_jpeg_folder(
    root: str | Path, n: int = 1024, side: int = 320, seed: int = 0, *, width: int | None = None, noise: float = 0.0
) -> list[Path]:
    """Write ``n`` JPEGs of ``side`` x ``width`` (default square) pixels under ``root``/{train,val}/classK; the training files."""
    root = Path(root)
    g = torch.Generator().manual_seed(seed)
    h, w = side, width or side
    files = []
    for start in range(0, n, 64):  # a chunk at a time: the float copy stays small
        count = min(64, n - start)
        coarse = torch.rand(count, 3, max(h // 16, 2), max(w // 16, 2), generator=g)
        images = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic") * 255
        if noise:
            images += noise * torch.randn(images.shape, generator=g)
        images = images.clamp(0, 255).to(torch.uint8)
        for i, img in enumerate(images, start=start):
            data = encode_jpeg(img, quality=90).numpy().tobytes()
            for split in ("train", "val"):
                folder = root / split / f"class{i % 4}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{i:06d}.jpg").write_bytes(data)
            files.append(root / "train" / f"class{i % 4}" / f"{i:06d}.jpg")
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root")
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--side", type=int, default=320, help="height (and width, unless --width) in pixels")
    p.add_argument("--width", type=int)
    p.add_argument("--noise", type=float, default=0.0, help="grain (standard deviation in 0..255 levels)")
    args = p.parse_args(argv)
    files = make_jpeg_folder(args.root, args.n, args.side, width=args.width, noise=args.noise)
    size = sum(f.stat().st_size for f in files) / len(files) / 1024
    print(
        f"wrote {len(files)} JPEGs of {args.side}x{args.width or args.side} ({size:.0f} KiB on average) to {args.root}/train and /val"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
