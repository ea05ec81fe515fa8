"""Drift checks for the promotion gate: tabular item features, embeddings, model scores.

Every check returns a `DriftCheck` (passed / failed / could_not_run, the figure the
decision was made on, its threshold, human reasons and per-column details); none of
them raises to say "drifted". The HTML is for people, `DriftCheck.to_dict()` (plain
JSON) is for the gate.

Choices
-------
* **Explicit statistical methods.** Evidently picks a method per column when none is
  given, and its choice depends on the size of the reference: up to 1,000 rows it
  runs tests (K-S, chi-square, Z: p-values, drift when p < 0.05), above 1,000 rows it
  switches to distances (Wasserstein, Jensen-Shannon: drift when the distance > 0.1).
  The same data would then pass or fail depending on how many rows were collected.
  We always pass `num_method` / `cat_method` and their thresholds (`DriftConfig`):
  numeric columns K-S, categorical columns chi-square by default, both at p < 0.05.
  Any other Evidently stattest can be named (`"wasserstein"`, `"psi"`,
  `"jensenshannon"`, ...; those are distances: drift when score >= threshold, so set
  the threshold with the method). The per-column verdict is Evidently's own.
* **Share rule.** `data_drift` fails when the share of drifted columns is *strictly
  greater* than `drift_share`. Evidently's own "dataset drift" (shown in the HTML)
  uses share >= drift_share, so at exactly the boundary the HTML says "drift" while the
  gate passes; the gate's rule is the one in `DriftCheck`.
* **Embeddings without t-SNE.** Evidently's `EmbeddingsDrift` metric runs the drift
  method and then, for its plot, a t-SNE of up to 2,500 points per side; the t-SNE
  dominates the run time (measured on 2 cores, 5,000 x 384-d per side: ~65 s for the
  metric, ~1 s for the "model" method alone; 1,000 rows: 8 s vs 0.15 s). We call the same
  drift method object (`evidently.legacy.metrics.data_drift.embedding_drift_methods`:
  `model`, `mmd`, `ratio`, `distance`) directly on a seeded sample of at most
  `max_rows` per side, and draw our own small page with a 2-D PCA projection (numpy
  SVD). `embedding_threshold` is the chosen method's own threshold. The default is
  `"mmd"` at 0.015 (the MMD^2 value, RBF kernel with the median heuristic): on
  same-distribution samples of 50 to 500 rows it never alarmed, where `"model"` (a
  domain classifier's ROC AUC on held-out rows, 0.55) alarmed in 7 of 48 trials, its
  AUROC being noisy on the batch sizes a cycle sees. Evidently's defaults for the others
  are model 0.55, ratio 0.2 (share of components
  drifted by normed Wasserstein > 0.1), distance 0.2 (euclidean distance between the
  means); set the threshold together with the method. The ratio and distance defaults
  are not scale-free: two samples of the same 32-d unit Gaussian (400 rows) already
  score ratio 0.25 and distance 0.39. For `"mmd"` the kernel matrix is
  (2 * max_rows)^2 floats: 128 MB at the default 2,000.
* **Lazy import.** Importing Evidently takes seconds; it happens inside the checks, so
  importing this module (e.g. for `DriftConfig`) stays cheap.
* **Determinism.** Samples come from `numpy.random.default_rng(cfg.seed)`; Evidently's
  stattests are deterministic and its embedding methods seed themselves.
"""

from mmd.config.gate import DEFAULT_COLUMNS, DriftConfig
from mmd.evaluate.drift.check import COULD_NOT_RUN, FAILED, PASSED, DriftCheck
from mmd.evaluate.drift.embeddings import embedding_drift
from mmd.evaluate.drift.frame import item_frame
from mmd.evaluate.drift.tabular import data_drift, save_html, score_drift

__all__ = ["DriftConfig", "DriftCheck", "item_frame", "data_drift", "embedding_drift", "score_drift", "save_html",
           "DEFAULT_COLUMNS", "PASSED", "FAILED", "COULD_NOT_RUN"]
