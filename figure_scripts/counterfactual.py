"""Counterfactuals of held-out real faces, measured (and on the toy faces, against the truth).

    python -m figure_scripts counterfactual --load_path logs/<run> [--n 200]
           [--do Bald=1 --do Eyeglasses=1 --do Male=0] [--refine_steps 100]
           [--encoder_steps 1500] [--retrain_encoder] [--train_readers]

For each of ``--n`` held-out faces of the data set (``classifier.heldout_mask``) the run
abducts the image noise (the core's ``abduction``: an encoder trained on G's samples,
then a few steps of latent optimisation; the labels are the data set's), then draws the
face under each ``--do``. Measured, each by every reader of the fidelity report's panel:

- composition: the null intervention's image (G redrawing the face) against the face, as
  L1 on [0, 1] pixels and as the readers' feature distance (divided by the median feature
  distance between two different real faces, so 1 means "as far as another face");
- effectiveness: the share of counterfactuals read with the intervened value (among the
  faces whose value changes), and the share of (face, label) pairs of the non-descendants
  read with their unchanged value;
- reversibility: the counterfactual image abducted again, the intervention undone, G's
  image against the face (L1);
- on the toy faces (their noise: ``toy_faces.load_exogenous``): the EXACT counterfactual
  (the face's own noise through the intervened model, the same individual redrawn) beside
  the model's: the L1 and feature distance of the model's counterfactual to it, against
  its distance to a random true face with the same labels (share of faces closer), the
  face itself unchanged (the do-nothing baseline), and two floors: two renders of the
  same face (the data set's file and a fresh render of its noise, 0 when the renderer
  is exact) and G's own redraw of the face (composition: what abduction can reach).

Written into ``<run>/counterfactual/`` (or ``--out``): report.md, summary.json,
composition.csv, effectiveness.csv, faces.csv (per face and intervention), exact.csv,
effectiveness.<ext>, distances.<ext> and grid.<ext> (columns: original | G's redraw |
each intervention's model counterfactual | its exact counterfactual).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

import abduction
from errors import UserError
from figure_scripts.encode import parse_do, strip
from figure_scripts.run import add_run_arguments, attribute_table, load_run
from figure_scripts.sample import check_nodes, descendants, image_model
from figure_scripts.utils import markdown_table

DEFAULT_DO = ("Bald=1", "Eyeglasses=1", "Male=0")
GOALS = {"composition_l1": 0.05, "effectiveness": 0.9, "kept": 0.9, "closer": 0.9}
GRID_FACES = 8
_FRESH_FACES = 10_000_000  # nuisance indices of random true faces: beyond any data set


@dataclass
class Measured:
    """Everything the report shows."""

    composition: pd.DataFrame     # one row per reader (and "pixels")
    effectiveness: pd.DataFrame   # one row per intervention and reader
    faces: pd.DataFrame           # one row per face and intervention
    exact: pd.DataFrame | None    # one row per intervention (toy faces only)
    info: dict
    grid: list = field(default_factory=list)  # (title, images [k, H, W, C])


# ----------------------------------------------------------------------------- inputs
def parse_settings(texts) -> list[dict[str, int]]:
    """``["Bald=1", ...]`` -> [{"Bald": 1}, ...]; values must be 0 or 1."""
    settings = []
    for text in texts:
        setting = parse_do(text)
        bad = {k: v for k, v in setting.items() if v not in (0.0, 1.0)}
        if bad:
            raise UserError(f"--do {text}: counterfactuals set labels to 0 or 1; got {bad}.")
        settings.append({k: int(v) for k, v in setting.items()})
    return settings


def heldout_faces(attr: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """Row positions of ``n`` held-out faces (all when fewer), drawn with ``seed``, sorted."""
    from figure_scripts.classifier import heldout_mask

    held = np.flatnonzero(heldout_mask(attr.index))
    if not len(held):
        raise UserError("The data set has no held-out faces (classifier.heldout_mask).")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(held, min(int(n), len(held)), replace=False))


def _panel(trainer, train: bool, progress: bool):
    from figure_scripts.readers import get_panel

    size, channels = int(trainer.config.input_scale_size), 1 if trainer.config.grayscale else 3
    panel = get_panel(trainer.dataset_dir, size, channels, train_if_missing=train,
                      progress=progress)
    if panel is None:
        raise UserError(f"No panel of attribute readers is cached for {trainer.dataset_dir} at "
                        f"{size}x{size}. Run python -m figure_scripts fidelity --load_path "
                        f"{trainer.model_dir} first (it trains them), or pass --train_readers.")
    return panel


# ----------------------------------------------------------------------------- measures
def l1(a, b) -> np.ndarray:
    """Per image, mean |a - b| on [0, 1] pixels."""
    return np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean(axis=(1, 2, 3)) / 255


def feature_distances(reading_a, reading_b) -> np.ndarray:
    """[R, N]: each reader's Euclidean feature distance between paired images."""
    return np.stack([np.linalg.norm(fa - fb, axis=1)
                     for fa, fb in zip(reading_a.features, reading_b.features, strict=True)])


def between_faces(reading, seed: int) -> np.ndarray:
    """[R]: each reader's median feature distance between two different faces."""
    n = len(reading)
    other = (np.arange(n) + 1 + np.random.default_rng(seed).integers(max(n - 1, 1), size=n)) % n
    return np.array([np.median(np.linalg.norm(f - f[other], axis=1)) for f in reading.features])


def _render(labels: pd.DataFrame, seed: int, nuisance, size: int, channels: int,
            resize_method: str) -> np.ndarray:
    """True toy faces of ``labels`` with the individuals ``nuisance`` of ``seed``, read
    through the data set's pipeline (JPEG, crop, resize)."""
    import tempfile

    import data_loader
    import toy_faces
    from figure_scripts.classifier import load_images

    with tempfile.TemporaryDirectory(prefix=".counterfactual-") as scratch:
        folder = toy_faces.render_labels(Path(scratch) / "faces", labels, seed=seed,
                                         nuisance=list(nuisance))
        attr = data_loader.read_attributes(folder / "list_attr_celeba.txt")
        images, _ = load_images(folder, attr, size, channels, False, "", resize_method)
    return images.astype(np.float32)


def _composition(readers, recon_l1, recon_feat) -> pd.DataFrame:
    """How far G's redraws are from the faces: in pixels and in each reader's features."""
    def row(measure, reader, d):
        return {"measure": measure, "reader": reader, "mean": d.mean(), "median": np.median(d),
                "p90": np.quantile(d, 0.9)}

    return pd.DataFrame([row("L1 (pixels in [0, 1])", "pixels", recon_l1)]
                        + [row("feature distance / between faces", r, d)
                           for r, d in zip(readers, recon_feat, strict=True)])


def _effect_rows(panel, names, columns, key, setting, cf_labels, read_cf, kept, below,
                 changed) -> list[dict]:
    """Per reader: how often the counterfactuals show the do, keep the non-descendants and
    follow the descendants' new labels."""
    read = read_cf.probs[:, :, columns] > 0.5  # [R, N, n]
    below_idx = [names.index(b) for b in below]
    rows = []
    for r, reader in enumerate(panel.names):
        hit = np.ones(len(changed), bool)
        for node, value in setting.items():
            hit &= read[r, :, names.index(node)] == bool(value)
        kept_hits = read[r][:, kept] == (cf_labels[:, kept] > 0.5)
        rows.append({"intervention": key, "reader": reader,
                     "effectiveness": hit[changed].mean() if changed.any() else np.nan,
                     "effectiveness_all": hit.mean(), "n_changed": int(changed.sum()),
                     "kept": kept_hits.mean() if kept else np.nan,
                     "kept_lowest": kept_hits.mean(axis=0).min() if kept else np.nan,
                     "kept_lowest_label": (names[kept[int(kept_hits.mean(axis=0).argmin())]]
                                           if kept else ""),
                     "descendants_follow": ((read[r][:, below_idx]
                                             == (cf_labels[:, below_idx] > 0.5)).mean()
                                            if below_idx else np.nan)})
    return rows


def _exact_row(panel, scale, names, x, cf, read_cf, cf_labels, true_labels, truth, other,
               face_rows) -> dict:
    """The counterfactuals against the exact ones (``truth``) and against random faces of
    the same true labels (``other``); adds the per-face columns to ``face_rows``."""
    read_truth, read_other = panel.read(truth), panel.read(other)
    d_exact, d_other, d_still = l1(cf, truth), l1(cf, other), l1(x, truth)
    f_exact = feature_distances(read_cf, read_truth) / scale[:, None]
    f_other = feature_distances(read_cf, read_other) / scale[:, None]
    same_labels = (cf_labels > 0.5) == (true_labels[names].to_numpy() > 0)
    face_rows.update(exact_l1=d_exact, random_same_labels_l1=d_other, unchanged_l1=d_still,
                     exact_feature=f_exact.mean(axis=0),
                     random_same_labels_feature=f_other.mean(axis=0),
                     labels_as_exact=same_labels.all(axis=1))
    return {"exact_l1": d_exact.mean(), "random_same_labels_l1": d_other.mean(),
            "unchanged_l1": d_still.mean(), "closer_l1": (d_exact < d_other).mean(),
            "closer_feature": (f_exact < f_other).mean(axis=1).min(),
            "closer_feature_mean": (f_exact < f_other).mean(),
            "exact_feature": f_exact.mean(), "random_feature": f_other.mean(),
            "labels_as_exact": same_labels.all(axis=1).mean()}


def measure(trainer, panel, encoder, settings, *, n: int = 200,
            refine_steps: int = abduction.REFINE_STEPS, lr: float = abduction.REFINE_LR,
            seed: int = 0, progress: bool = True) -> Measured:
    """The module docstring's measures on ``n`` held-out faces of the run's data set."""
    import toy_faces
    from figure_scripts.classifier import load_images
    from figure_scripts.fidelity import toy_scm

    start = time.perf_counter()
    model, cc = image_model(trainer), trainer.cc
    names = list(cc.label_names)
    for setting in settings:
        check_nodes(cc, setting, "--do")
    columns = panel.columns(names)
    size, channels = int(trainer.config.input_scale_size), 1 if trainer.config.grayscale else 3
    resize = str(trainer.config.resize_method)
    table = attribute_table(trainer, "counterfactual")
    rows = heldout_faces(table, n, seed)
    attr = table.iloc[rows]
    x, y = load_images(trainer.dataset_dir, attr[names], size, channels, progress,
                       "counterfactual: reading held-out faces", resize)
    x = x.astype(np.float32)
    fit, labels = abduction.abduct(model, encoder, x, y, steps=refine_steps, lr=lr)
    z = tf.constant(fit.z_gen)
    read_x, read_recon = panel.read(x), panel.read(fit.reconstruction)
    scale = between_faces(read_x, seed)
    recon_l1 = l1(fit.reconstruction, x)
    recon_feat = feature_distances(read_recon, read_x) / scale[:, None]
    composition = _composition(panel.names, recon_l1, recon_feat)
    noise = abduction.controller_noise(cc, labels, seed=seed)

    scm, exogenous, exact_note = toy_scm(trainer.dataset_dir), None, ""
    if scm is None:
        exact_note = "not a toy faces data set (no scm.json): no exact counterfactuals"
    else:
        try:
            exogenous = toy_faces.load_exogenous(trainer.dataset_dir)
        except ValueError as err:
            exact_note = str(err)
    floor_l1 = None
    if exogenous is not None:
        u = exogenous.u[rows][:, [exogenous.nodes.index(node) for node in scm.nodes]]
        nuisance, fresh = exogenous.index[rows], _FRESH_FACES + np.arange(len(rows))
        again = _render(scm.solve(u), exogenous.seed, nuisance, size, channels, resize)
        floor_l1 = l1(again, x)

    effect, per_face, exact = [], [], []
    grid = [("original", x[:GRID_FACES]), ("G's redraw", fit.reconstruction[:GRID_FACES])]
    for setting in settings:
        key = "do(" + ", ".join(f"{k}={v}" for k, v in setting.items()) + ")"
        cf_labels = abduction.counterfactual_labels(cc, labels, noise, setting)
        cf = model.generate(tf.constant(cf_labels), z, round_labels=True).numpy()
        read_cf = panel.read(cf)
        below = set().union(*(descendants(cc, node) for node in setting))
        kept = [i for i, name in enumerate(names) if name not in setting and name not in below]
        changed = np.ones(len(rows), bool)
        for node, value in setting.items():
            changed &= labels[:, names.index(node)] != value
        effect += _effect_rows(panel, names, columns, key, setting, cf_labels, read_cf, kept,
                               below, changed)
        # reversibility: abduct the counterfactual again, undo, compare with the face
        again_fit = abduction.refine(model, cf, cf_labels, encoder(cf)[0], steps=refine_steps,
                                     lr=lr)
        undone = model.generate(tf.constant(labels), tf.constant(again_fit.z_gen),
                                round_labels=True).numpy()
        rev_l1 = l1(undone, x)
        face_rows = {"intervention": [key] * len(rows), "face": list(attr.index),
                     "changed": changed, "reversed_l1": rev_l1,
                     "reversed_vs_redraw_l1": l1(undone, fit.reconstruction),
                     "composition_l1": recon_l1}
        grid.append((f"model {key}", cf[:GRID_FACES]))
        if exogenous is not None:
            true_labels = scm.solve(u, setting)
            truth = _render(true_labels, exogenous.seed, nuisance, size, channels, resize)
            other = _render(true_labels, exogenous.seed, fresh, size, channels, resize)
            row = _exact_row(panel, scale, names, x, cf, read_cf, cf_labels, true_labels, truth,
                             other, face_rows)
            exact.append({"intervention": key, **row, "floor_two_renders_l1": floor_l1.mean(),
                          "floor_redraw_l1": recon_l1.mean()})
            grid.append((f"exact {key}", truth[:GRID_FACES]))
        per_face.append(pd.DataFrame(face_rows))
    info = {"run": str(trainer.model_dir), "step": int(trainer.overall_step()),
            "n_faces": int(len(rows)), "refine_steps": int(refine_steps), "lr": float(lr),
            "seed": int(seed), "readers": list(panel.names), "labels": names,
            "abduction_seconds_per_face": fit.seconds / max(len(rows), 1),
            "abduction_seconds": fit.seconds, "refine_mse": [float(fit.mse[0]),
                                                             float(fit.mse[-1])],
            "encoder": {k: v for k, v in encoder.info.items() if k != "history"},
            "exact_note": exact_note, "seconds": round(time.perf_counter() - start, 1)}
    return Measured(composition, pd.DataFrame(effect), pd.concat(per_face, ignore_index=True),
                    pd.DataFrame(exact) if exact else None, info, grid)


# ----------------------------------------------------------------------------- report
def targets(m: Measured) -> pd.DataFrame:
    """One row per goal of the issue: the value, the goal, PASS/FAIL and by how much. A
    reader-level goal takes the lowest reader (it passes only when every reader does)."""
    rows = []
    value = float(m.composition.loc[m.composition.reader == "pixels", "mean"].iloc[0])
    rows.append(("composition: L1 of the null intervention", value, f"<= {GOALS['composition_l1']}",
                 value <= GOALS["composition_l1"], value - GOALS["composition_l1"]))
    for key, group in m.effectiveness.groupby("intervention", sort=False):
        low = float(group.effectiveness.min())
        rows.append((f"{key}: read with the intervened value (lowest reader)", low,
                     f">= {GOALS['effectiveness']}", low >= GOALS["effectiveness"],
                     GOALS["effectiveness"] - low))
        kept = float(group.kept.min())
        if np.isfinite(kept):
            rows.append((f"{key}: non-descendants kept (lowest reader)", kept,
                         f">= {GOALS['kept']}", kept >= GOALS["kept"], GOALS["kept"] - kept))
    if m.exact is not None:
        for row in m.exact.itertuples():
            rows.append((f"{row.intervention}: closer to the exact counterfactual than to a "
                         "random face of its labels (L1)", row.closer_l1, f">= {GOALS['closer']}",
                         row.closer_l1 >= GOALS["closer"], GOALS["closer"] - row.closer_l1))
    frame = pd.DataFrame(rows, columns=["target", "value", "goal", "passed", "missed_by"])
    frame["status"] = np.where(frame.passed, "PASS", "FAIL")
    frame["missed_by"] = np.where(frame.passed, 0.0, frame.missed_by)
    return frame.drop(columns="passed")


def _plots(m: Measured, folder: Path, ext: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    paths = []
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    keys = list(dict.fromkeys(m.effectiveness.intervention))
    readers = list(dict.fromkeys(m.effectiveness.reader))
    width = 0.8 / (2 * len(readers))
    for j, reader in enumerate(readers):
        part = m.effectiveness[m.effectiveness.reader == reader].set_index("intervention")
        xs = np.arange(len(keys)) + j * 2 * width
        ax.bar(xs, part.loc[keys, "effectiveness"], width, label=f"{reader}: intervened")
        ax.bar(xs + width, part.loc[keys, "kept"], width, label=f"{reader}: kept", alpha=0.6)
    ax.axhline(GOALS["effectiveness"], color="k", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width)
    ax.set_xticklabels(keys, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title("effectiveness (intervened value read) and non-descendants kept", fontsize=9)
    fig.tight_layout()
    paths.append(folder / f"effectiveness.{ext}")
    fig.savefig(paths[-1])
    if "exact_l1" in m.faces:
        fig = Figure(figsize=(3.2 * len(keys), 3))
        for i, key in enumerate(keys):
            part = m.faces[m.faces.intervention == key]
            ax = fig.add_subplot(1, len(keys), i + 1)
            bins = np.linspace(0, max(part.random_same_labels_l1.max(), 1e-3), 30)
            ax.hist(part.exact_l1, bins, alpha=0.7, label="to the exact cf")
            ax.hist(part.random_same_labels_l1, bins, alpha=0.7, label="to a random same-label face")
            ax.axvline(part.composition_l1.mean(), color="k", lw=0.8, ls="--", label="G's redraw")
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("L1 of the model's counterfactual", fontsize=8)
            if i == 0:
                ax.legend(fontsize=6)
        fig.tight_layout()
        paths.append(folder / f"distances.{ext}")
        fig.savefig(paths[-1])
    return paths


def write_report(m: Measured, folder, ext: str = "png") -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = targets(m)
    paths = []
    for name, frame in (("composition", m.composition), ("effectiveness", m.effectiveness),
                        ("faces", m.faces), ("exact", m.exact), ("targets", table)):
        if frame is not None:
            paths.append(folder / f"{name}.csv")
            frame.to_csv(paths[-1], index=False, float_format="%.5f")
    reversed_l1 = m.faces.groupby("intervention", sort=False)[
        ["reversed_l1", "reversed_vs_redraw_l1"]].mean().reset_index()
    summary = {**m.info, "targets": table.to_dict(orient="records"),
               "composition": m.composition.to_dict(orient="records"),
               "effectiveness": m.effectiveness.to_dict(orient="records"),
               "reversibility": reversed_l1.to_dict(orient="records"),
               "exact": None if m.exact is None else m.exact.to_dict(orient="records"),
               "passed": int((table.status == "PASS").sum()),
               "failed": int((table.status == "FAIL").sum())}
    paths.append(folder / "summary.json")
    paths[-1].write_text(json.dumps(summary, indent=2, default=_plain) + "\n")
    paths += _plots(m, folder, ext)
    k = len(m.grid[0][1])
    paths.append(strip(m.grid[0][1], m.grid, [str(f) for f in m.faces.face[:k]],
                       folder / f"grid.{ext}"))
    info = m.info
    text = [f"# Counterfactuals: {Path(info['run']).name}", "",
            f"Run `{info['run']}`, step {info['step']}; {info['n_faces']} held-out faces; "
            f"readers {', '.join(info['readers'])}; abduction: the encoder "
            f"({info['encoder'].get('steps')} steps on G's samples) then "
            f"{info['refine_steps']} refinement steps, {info['abduction_seconds_per_face']:.2f} s "
            f"a face; {info['seconds']} s in all.", "", "## Targets", "", markdown_table(table), "",
            "## Composition (the null intervention against the face)", "", markdown_table(m.composition),
            "", "## Effectiveness (each reader; effectiveness among the faces whose value "
            "changes)", "", markdown_table(m.effectiveness), "", "## Reversibility (do, abduct again, "
            "undo; L1 against the face and against G's redraw)", "", markdown_table(reversed_l1), ""]
    if m.exact is not None:
        text += ["## Against the exact counterfactual (toy faces)", "",
                 "L1 and feature distances of the model's counterfactual to the exact one, to "
                 "a random true face with the same labels, and of the unchanged face to the "
                 "exact one; floors: two renders of the same face, G's redraw.", "",
                 markdown_table(m.exact), ""]
    else:
        text += [f"No exact counterfactuals: {info['exact_note']}.", ""]
    text += [f"![grid](grid.{ext})", ""]
    paths.append(folder / "report.md")
    paths[-1].write_text("\n".join(text))
    return paths


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m figure_scripts counterfactual",
        description="Counterfactuals of held-out real faces: composition, effectiveness, "
                    "reversibility, and on the toy faces the distance to the exact "
                    "counterfactual.")
    add_run_arguments(parser, "Output folder (default: <run>/counterfactual).")
    parser.add_argument("--n", type=int, default=200, help="Held-out faces.")
    parser.add_argument("--do", action="append", default=None, metavar="NODE=V[,NODE=V]",
                        help="An intervention (repeat; default: " + ", ".join(DEFAULT_DO) + ").")
    parser.add_argument("--refine_steps", type=int, default=abduction.REFINE_STEPS,
                        help="Latent optimisation steps after the encoder.")
    parser.add_argument("--lr", type=float, default=abduction.REFINE_LR, help="Adam's rate of the refinement.")
    parser.add_argument("--encoder_steps", type=int, default=abduction.ENCODER_STEPS,
                        help="Training steps of the encoder (when it is not cached).")
    parser.add_argument("--retrain_encoder", action="store_true",
                        help="Train the encoder again even when it is cached.")
    parser.add_argument("--train_readers", action="store_true",
                        help="Train the panel of readers when it is not cached.")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    return parser


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    settings = parse_settings(args.do or DEFAULT_DO)  # bad --do fails before loading
    if args.n < 2:
        raise UserError(f"--n must be at least 2 faces; got {args.n}.")
    if args.refine_steps < 0 or args.encoder_steps < 1:
        raise UserError("--refine_steps must be >= 0 and --encoder_steps >= 1.")
    trainer = load_run(args.load_path)
    image_model(trainer)
    for setting in settings:
        check_nodes(trainer.cc, setting, "--do")
    panel = _panel(trainer, args.train_readers, not args.quiet)
    encoder = abduction.get_encoder(trainer, steps=args.encoder_steps,
                                    retrain=args.retrain_encoder, seed=args.seed,
                                    progress=not args.quiet)
    m = measure(trainer, panel, encoder, settings, n=args.n, refine_steps=args.refine_steps,
                lr=args.lr, seed=args.seed, progress=not args.quiet)
    folder = Path(args.out) if args.out else Path(trainer.model_dir) / "counterfactual"
    paths = write_report(m, folder, args.figure_ext)
    table = targets(m)
    print(f"counterfactual: {m.info['n_faces']} faces, "
          f"{m.info['abduction_seconds_per_face']:.2f} s a face to abduct")
    for row in table.itertuples():
        print(f"  {row.status}  {row.target}: {row.value:.3f} (goal {row.goal})")
    print(f"wrote {folder} ({len(paths)} files)")
    return 0
