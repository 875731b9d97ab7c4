"""Speed of the data layer, each figure beside a baseline measured in the same run.

    python -m benchmarks.bench_data [--n 2000] [--dir PATH] [--consumer-rate IMAGES_PER_S]

Measures: toy-face rendering (images/s, target 300), the image pipeline at 64x64 from
178x218 JPEGs (images/s, target 1,000), the labels-only pipeline (label vectors/s,
target 50,000), and as baselines on this (possibly busy) machine plain PIL JPEG decoding
on one core and a numpy matmul. ``--consumer-rate`` prints the rate at which a training
step consumes images (e.g. measured by the trainer's benchmark) next to the pipeline's,
so one can see whether input is the bottleneck.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import toy_faces  # noqa: E402


def rate(fn, min_seconds: float) -> tuple[float, float]:
    """Run ``fn`` (returning a count) until ``min_seconds`` pass; (count/s, seconds)."""
    start, count = time.perf_counter(), 0
    while True:
        count += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return count / elapsed, elapsed


def bench_render(out: Path, n: int, workers: int | None) -> float:
    start = time.perf_counter()
    toy_faces.render_dataset(out, n=n, seed=0, workers=workers, progress=False)
    return n / (time.perf_counter() - start)


def bench_pil_decode(folder: Path, seconds: float) -> float:
    files = sorted((folder / "images").iterdir())[:500]

    def decode_all():
        for path in files:
            with Image.open(path) as image:
                image.load()
        return len(files)

    return rate(decode_all, seconds)[0]


def bench_matmul(seconds: float) -> float:
    a = np.random.default_rng(0).random((512, 512), dtype=np.float32)
    flops = 2 * 512**3
    return rate(lambda: (a @ a, 1)[1], seconds)[0] * flops / 1e9


def make_photo_like(folder: Path, n: int = 500) -> Path:
    """``n`` 178x218 JPEGs of multi-scale noise plus grain: about 9 KB each, near the
    entropy of real CelebA files (7 KB on average), so decoding costs about the same."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    lines = [str(n), "Male"]
    for i in range(n):
        base = np.zeros((218, 178, 3))
        for s in (4, 8, 16, 32, 64):
            small = rng.normal(0, 1, (218 // s + 2, 178 // s + 2, 3))
            small = ((small - small.min()) / np.ptp(small) * 255).astype(np.uint8)
            up = Image.fromarray(small).resize((178 + 2 * s, 218 + 2 * s), Image.Resampling.BICUBIC)
            base += np.asarray(up, dtype=float)[:218, :178] * (s / 64)
        pixels = base / base.max() * 200 + rng.normal(0, 5, base.shape)
        name = f"{i + 1:06d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            folder / "images" / name, quality=90
        )
        lines.append(f"{name} {1 if i % 2 else -1}")
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return folder


def bench_images(folder: Path, batch: int, size: int, seconds: float, workers: int) -> float:
    import data_loader

    table = data_loader.read_attributes(data_loader.find_attribute_file(folder))
    ds = data_loader.image_dataset(
        folder, table, list(table.columns), batch, scale_size=size, seed=0, num_worker=workers
    )
    it = iter(ds)
    for _ in range(5):  # warm up: tracing, thread pools, file cache
        next(it)
    return rate(lambda: next(it)[0].shape[0], seconds)[0]


def bench_labels(folder: Path, batch: int, seconds: float) -> float:
    import data_loader

    table = data_loader.read_attributes(data_loader.find_attribute_file(folder))
    it = iter(data_loader.label_dataset(table, list(table.columns), batch, seed=0))
    for _ in range(5):
        next(it)

    def draw():
        count = 0
        for _ in range(50):
            count += next(it).shape[0]
        return count

    return rate(draw, seconds)[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="toy faces to render")
    parser.add_argument(
        "--dir", default=None, help="a toyfaces folder to reuse (rendered there if missing)"
    )
    parser.add_argument("--batch_size", type=int, default=64, help="image batch size")
    parser.add_argument("--scale_size", type=int, default=64, help="image side")
    parser.add_argument("--num_worker", type=int, default=24, help="decode threads (capped)")
    parser.add_argument("--render_workers", type=int, default=None, help="render processes")
    parser.add_argument("--label_batch", type=int, default=336, help="(n_critic+1)*batch_size")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument(
        "--consumer-rate",
        "--consumer_rate",
        dest="consumer_rate",
        type=float,
        default=None,
        help="images/s a training step consumes, printed beside the pipeline's rate",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.dir) if args.dir else Path(scratch) / "toyfaces"
        rows = []
        if (folder / "list_attr_celeba.txt").is_file():
            rows.append(("toy-face rendering", None, "images/s", 300, "(reused folder)"))
        else:
            render = bench_render(folder, args.n, args.render_workers)
            rows.append(("toy-face rendering", render, "images/s", 300, f"{args.n} images"))
        pil = bench_pil_decode(folder, args.seconds / 2)
        gflops = bench_matmul(args.seconds / 2)
        images = bench_images(
            folder, args.batch_size, args.scale_size, args.seconds, args.num_worker
        )
        photo_dir = make_photo_like(Path(scratch) / "photolike")
        photo = bench_images(
            photo_dir, args.batch_size, args.scale_size, args.seconds, args.num_worker
        )
        photo_pil = bench_pil_decode(photo_dir, args.seconds / 2)
        labels = bench_labels(folder, args.label_batch, args.seconds)

    size = args.scale_size
    rows.append(
        (f"image pipeline {size}x{size}", images, "images/s", 1000, f"batch {args.batch_size}")
    )
    rows.append(
        (f"image pipeline {size}x{size}, photo-like", photo, "images/s", 1000, "~9 KB JPEGs")
    )
    rows.append(("labels pipeline", labels, "vectors/s", 50000, f"batch {args.label_batch}"))
    rows.append(("baseline: PIL decode toy faces, 1 core", pil, "images/s", None, "full frame"))
    rows.append(("baseline: PIL decode, photo-like", photo_pil, "images/s", None, "~9 KB JPEGs"))
    rows.append(("baseline: numpy 512x512 matmul", gflops, "GFLOP/s", None, "float32"))
    if args.consumer_rate is not None:
        rows.append(("training step consumption", args.consumer_rate, "images/s", None, "given"))

    print(f"data layer benchmark; {os.cpu_count()} CPU cores (shared: figures are noisy)")
    for name, value, unit, target, note in rows:
        shown = "-" if value is None else f"{value:,.0f}"
        verdict = ""
        if target is not None and value is not None:
            verdict = f"target {target:,}: {'OK' if value >= target else 'BELOW'}"
        print(f"  {name:<36} {shown:>12} {unit:<10} {verdict:<22} {note}")
    if args.consumer_rate is not None:
        ratio = images / args.consumer_rate
        print(
            f"  pipeline / consumption = {ratio:.1f}x ({'input is not' if ratio > 1 else 'input IS'} the bottleneck)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
