"""Methods with a trainer of their own, one folder each (TRL style: config, trainer, glue).

The strategies in `s3ft.strategies` choose one SFT target per row and share `s3ft.train`; the
methods here learn otherwise (e.g. `opsd`: on-policy from the model's own samples) and only
share the pipeline's stages around training: data, selection record, adapter, evaluation.
"""

OWN_TRAINER = ("opsd",)
"""Method names trained by their own trainer rather than SFT on selected targets."""

from . import opsd  # noqa: E402,F401  (registers its config section)
