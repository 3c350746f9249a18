"""Cost of the start-up image check (anchoropt/datasets/image_check.py) on a 50,000-image split.

    PYTHONPATH=. python -m bench.bench_image_check [--images 50000] [--size 224] [--dir /tmp/x]

Writes a split of JPEG files (a few distinct images, each copied many times: the check reads
file headers, so only the file count and size matter), then times ``check_images`` over all of
them and a full decode (``read_image``, what the data loader does) of a sample, extrapolated to
the split, and prints both and their ratio. The files were just written, so they are in the page
cache: on a cold network disk each file open costs more (for both).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time

import numpy as np
from PIL import Image

from anchoropt.datasets.image_check import check_images
from anchoropt.engine.builtin.tools import read_image


class Item:
    def __init__(self, impath: str) -> None:
        self.impath = impath


def write_split(folder: str, count: int, size: int, per_folder: int = 1000) -> list[Item]:
    rng = np.random.default_rng(0)
    payloads = []
    for _ in range(8):
        arr = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(arr).save(buffer, format="JPEG", quality=90)
        payloads.append(buffer.getvalue())
    items = []
    for i in range(count):
        sub = os.path.join(folder, f"class_{i // per_folder:04d}")
        if i % per_folder == 0:
            os.makedirs(sub, exist_ok=True)
        path = os.path.join(sub, f"{i:06d}.jpg")
        with open(path, "wb") as f:
            f.write(payloads[i % len(payloads)])
        items.append(Item(path))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000, help="files in the split (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--sample", type=int, default=1000, help="images decoded in full (default: %(default)s)")
    parser.add_argument("--dir", default="", help="where to write the split (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.dir or tempfile.mkdtemp(prefix="anchoropt-imagecheck-")
    try:
        start = time.perf_counter()
        items = write_split(folder, args.images, args.size)
        written = time.perf_counter() - start
        mb = sum(os.path.getsize(it.impath) for it in items[:100]) / 100 * len(items) / 2**20
        print(f"split: {len(items)} JPEG files of {args.size}x{args.size} px, {mb:.0f} MiB, written in {written:.1f} s")

        start = time.perf_counter()
        check_images([("test", items)], "generated")
        check = time.perf_counter() - start

        sample = items[: args.sample]
        start = time.perf_counter()
        for it in sample:
            read_image(it.impath)
        decode = (time.perf_counter() - start) / len(sample) * len(items)

        print(f"start-up check of {len(items)} images: {check:.2f} s ({check / len(items) * 1e6:.1f} us per image)")
        print(f"full decode of the same images (from {len(sample)}): {decode:.1f} s")
        print(f"check / full decode: {check / decode:.3f}")
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
