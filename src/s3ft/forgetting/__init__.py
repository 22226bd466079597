"""The forgetting meter a run's `forgetting` stage measures: how far each adapter moved from the base.

* ``meter``: the stage itself: control adapters, the drift sample, the labelled probe;
* ``drift``: label-free drift from the base model (text NLL change, response KL);
* ``likelihood``: per-item likelihood deltas on a labelled multiple-choice probe;
* ``scoring``: the teacher-forced forward pass every likelihood measure uses;
* ``targets``: ``encode_target`` / ``NLLScorer``: training targets as TRL tokenizes them, and their NLL;
* ``lm_eval_bridge``: benchmarks through lm-evaluation-harness (the probe, and `s3ft compare`'s
  general benchmarks);
* ``records``: the per-item ``Paired`` measurements and ``Estimate`` with its CI.

`s3ft run` writes these artifacts; `s3ft compare` (``s3ft.compare``) only reads and pools them.
"""
