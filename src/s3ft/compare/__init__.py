"""`s3ft compare`: did a fine-tune gain in-domain without forgetting, compared with SFT?

For every method a run directory holds (base, sft, sdft, ssr, s3ft, and the forgetting meter's
controls), one module per measurement:

* ``in_domain``: accuracy from ``eval/<method>.metrics.json`` and the per-id verdicts (cross-checked);
* the forgetting meter the run's ``forgetting`` stage wrote (``s3ft.forgetting``): label-free drift
  from the base model (text NLL change, response KL) and, on a labelled multiple-choice probe,
  accuracy and per-item likelihood deltas;
* ``general`` (over ``s3ft.forgetting.lm_eval_bridge``): general benchmarks through lm-evaluation-harness for the base
  model and every adapter with one ``GeneralEvalConfig``: accuracy deltas, the papers' *average
  drop*, per-item likelihood deltas (from the same lm-eval run) and IFEval's four accuracies;
* ``target_nll``: the base model's NLL of each method's training targets (S3FT Fig. 2);
* ``audit``: a second judge re-judges a seeded sample of the selection decisions;
* ``seeds``: several run directories (seeds) pooled by a hierarchical bootstrap (seeds, then items);
* ``contrasts``: every method against SFT (and pairs asked for), paired over items, pooled over seeds,
  with a verdict read off the CIs;
* ``report`` / ``plots``: report.md and a self-contained report.html, all from compare.json.

Every paired measurement is kept per item as a ``s3ft.forgetting.records.Paired``; its 95% CI resamples items
(and seeds, when pooled).
"""

from __future__ import annotations

import importlib

# The command (`command.py`) loads lm-eval's bridge, the plots and the reports: it is imported on first use,
# so that the run's own report can read the contrast statistics (`contrasts`) without loading the command.
_COMMAND = ("CompareOptions", "Comparison", "compare", "forgetting_labels")


def __getattr__(name: str):
    if name in _COMMAND:
        return getattr(importlib.import_module(f"{__name__}.command"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
