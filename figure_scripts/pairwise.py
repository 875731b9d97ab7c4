"""TVD and crosstabs of label distributions, for the figure scripts.

The arithmetic lives in the core module ``label_stats`` (the controller's pretraining
measures its TVD with it); this module keeps the names the figure scripts and sessions
use (``pairwise.calc_tvd``, ``pairwise.crosstab``, ...).
"""

from __future__ import annotations

from label_stats import (  # noqa: F401 (re-exported)
    calc_tvd,
    crosstab,
    crosstab_of_counts,
    encode,
    encode_columns,
    tvd_exact,
    tvd_from_arrays,
    tvd_seen_only,
)
