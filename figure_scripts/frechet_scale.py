"""What a Fréchet ratio means: true faces changed in one known way, measured as the
fidelity report measures generated ones.

    python -m figure_scripts.frechet_scale [--dataset_dir data/toyfaces] [--size 32] [--n 2000]
                                           [--sets]

Two independent sets of ``n`` true toy faces are rendered from the exact model; the
second is blurred, noised or recoloured, and its Fréchet distance to the first, in each
reader's feature space of the cached panel, is printed as a multiple of the floor (the
distance between the two unchanged sets), the unit of the report's "observational <= 8x
the floor" target. Needs the panel cached for the data set and size (the fidelity report
trains it).

``--sets`` also asks what the report's "each do/cond set <= 1.5x the observational
distance" targets mean: a "generator" that draws true faces of the right labels, changed
in one way, is measured on every distribution set of the report against true faces of
that set, and each set's distance is printed as a multiple of the changed observational
distance (the ratio those targets use). A generator whose only flaw is the change, the
same on every face, scores these ratios.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from errors import UserError  # noqa: E402

CHANGES = (("Gaussian blur, sigma 0.5 pixel", "blur", 0.5),
           ("Gaussian blur, sigma 1.0 pixel", "blur", 1.0),
           ("Gaussian noise, std 10 (of 255)", "noise", 10.0),
           ("Gaussian noise, std 25", "noise", 25.0),
           ("colour: 0.9 x + 15", "colour", 0.9))


def blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur of [N, S, S, C] images (reflected borders)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.pad(images.astype(np.float64), [(0, 0), (radius, radius), (radius, radius),
                                              (0, 0)], mode="reflect")
    size = images.shape[1]
    out = sum(k * out[:, i:i + size, :, :] for i, k in enumerate(kernel))
    out = sum(k * out[:, :, i:i + size, :] for i, k in enumerate(kernel))
    return out.astype(np.float32)


def changed(images: np.ndarray, kind: str, amount: float, seed: int = 0) -> np.ndarray:
    if kind == "blur":
        return blurred(images, amount)
    if kind == "noise":
        noise = np.random.default_rng(seed).normal(0.0, amount, images.shape)
        return np.clip(images + noise, 0, 255).astype(np.float32)
    if kind == "colour":
        return np.clip(images * amount + 15.0, 0, 255).astype(np.float32)
    raise ValueError(f"unknown change {kind!r}")


def measure(panel, scm, size: int, n: int, seed: int = 0) -> dict:
    """{"floor": {reader: d}, change name: {reader: ratio to the floor}}."""
    from figure_scripts import frechet

    first = frechet.render_true_images(scm.sample(n, seed=seed + 1), size, 3, seed=seed + 11)
    second = frechet.render_true_images(scm.sample(n, seed=seed + 2), size, 3, seed=seed + 12)
    reference = panel.read(first)

    def distances(images):
        reading = panel.read(images)
        return {name: frechet.frechet_distance(reference.features[r], reading.features[r])
                for r, name in enumerate(panel.names)}

    floor = distances(second)
    out = {"floor": floor}
    for label, kind, amount in CHANGES:
        d = distances(changed(second, kind, amount, seed))
        out[label] = {name: d[name] / floor[name] for name in panel.names}
    return out


def measure_sets(panel, scm, size: int, n: int, seed: int = 0, changes=CHANGES) -> dict:
    """{change name: {set key: {reader: distance / the changed observational distance}}}
    for every distribution set of the report, true faces changed against true faces."""
    from figure_scripts import frechet

    sets = frechet.distribution_sets(list(scm.nodes))
    render = frechet.render_true_images
    reference = {d.key: panel.read(render(frechet.true_labels(scm, d, n, seed + 100 + i),
                                          size, 3, seed=seed + 300 + i))
                 for i, d in enumerate(sets)}
    drawn = {d.key: render(frechet.true_labels(scm, d, n, seed + 200 + i), size, 3,
                           seed=seed + 400 + i) for i, d in enumerate(sets)}
    out = {}
    for label, kind, amount in changes:
        d = {}
        for key, images in drawn.items():
            reading = panel.read(changed(images, kind, amount, seed))
            d[key] = {name: frechet.frechet_distance(reference[key].features[r],
                                                     reading.features[r])
                      for r, name in enumerate(panel.names)}
        observed = d[frechet.OBSERVATIONAL]
        out[label] = {key: {name: v[name] / observed[name] for name in panel.names}
                      for key, v in d.items() if key != frechet.OBSERVATIONAL}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m figure_scripts.frechet_scale",
                                     description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset_dir", default="data/toyfaces",
                        help="A toy faces folder whose reader panel is cached.")
    parser.add_argument("--size", type=int, default=32, help="Image side of the panel.")
    parser.add_argument("--n", type=int, default=2000, help="Images per set.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", action="store_true",
                        help="Also print, per change, every do/cond/pair set's distance as a "
                             "multiple of the changed observational distance.")
    args = parser.parse_args(argv)
    import toy_faces
    from figure_scripts.readers import get_panel

    panel = get_panel(args.dataset_dir, args.size, 3, train_if_missing=False, progress=False)
    if panel is None:
        raise UserError(f"No reader panel is cached for {args.dataset_dir} at {args.size}x"
                        f"{args.size}: run `python -m figure_scripts fidelity --load_path "
                        "logs/<run>` on a run of that data set and size first.")
    result = measure(panel, toy_faces.default_scm(), args.size, args.n, args.seed)
    print("| change to true faces | " + " | ".join(panel.names) + " |")
    print("|---|" + "---|" * len(panel.names))
    print("| floor (distance) | " + " | ".join(f"{result['floor'][r]:.4f}"
                                               for r in panel.names) + " |")
    for label, _, _ in CHANGES:
        print(f"| {label} | " + " | ".join(f"{result[label][r]:.1f}" for r in panel.names)
              + " |")
    if args.sets:
        ratios = measure_sets(panel, toy_faces.default_scm(), args.size, args.n, args.seed)
        keys = list(next(iter(ratios.values())))
        print("\nEach set's distance / the observational distance, true faces changed alike "
              "(panel mean, max):\n")
        print("| change | " + " | ".join(keys) + " |")
        print("|---|" + "---|" * len(keys))
        for label, row in ratios.items():
            cells = [f"{np.mean(list(row[k].values())):.2f} ({max(row[k].values()):.2f})"
                     for k in keys]
            print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
