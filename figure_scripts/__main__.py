"""One command line for every figure: ``python -m figure_scripts <figure> --load_path logs/<run>``.

Each figure lives in its own module of this package and offers ``main(argv) -> int``
(argv without the figure's name); this file only dispatches. ``python -m figure_scripts
--help`` lists the figures, ``python -m figure_scripts <figure> --help`` their options.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
# before numpy is first imported: the figures' linear algebra is small (the fidelity
# report's Fréchet distances), and OpenBLAS threads spinning on two busy cores made it
# many times slower than one thread
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# figure name -> (module, function, one line of help)
FIGURES = {
    "fidelity": ("figure_scripts.fidelity_report", "main",
                 "causal-fidelity report: a panel of independent readers reads the images"),
    "high_level": ("figure_scripts.high_level", "main",
                   "the paper's 2x10 grids: do vs cond, do 1 vs 0, cond 1 vs 0"),
    "condition2d": ("figure_scripts.grid2d", "main_condition",
                    "a grid over two labels' conditions"),
    "intervention2d": ("figure_scripts.grid2d", "main_intervention",
                       "a grid over two labels' interventions"),
    "distributions": ("figure_scripts.distributions", "main",
                      "label means under do/cond vs the data (CSV and plots)"),
    "encode": ("figure_scripts.encode", "main",
               "counterfactuals of real faces (fit the inputs, then intervene)"),
    "counterfactual": ("figure_scripts.counterfactual", "main",
                       "counterfactuals of held-out faces measured (exact ones on toy faces)"),
    "tvd_plot": ("figure_scripts.tvd_plot", "main",
                 "controller TVD against iteration from runs' TensorBoard events"),
    "explore": ("figure_scripts.explore", "main",
                "a local page: choose do / given per node, see the same individuals redrawn"),
}


def usage() -> str:
    width = max(map(len, FIGURES))
    lines = ["usage: python -m figure_scripts <figure> --load_path logs/<run> [options]",
             "", "figures:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, _, text) in FIGURES.items()]
    lines += ["", "python -m figure_scripts <figure> --help shows a figure's options."]
    return "\n".join(lines)


def run(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in FIGURES:
        print(f"figure_scripts: error: unknown figure {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, function, _ = FIGURES[name]
    from errors import UserError

    try:
        module = importlib.import_module(module_name)
        return int(getattr(module, function)(rest) or 0)
    except UserError as err:
        print(f"figure_scripts {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip TensorFlow's slow teardown; everything is written by now
