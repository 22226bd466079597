"""s3ft: fine-tune LLMs on their own correct answers (SSR / S3FT) so they forget less."""

__version__ = "0.1.0"

from . import methods  # noqa: E402,F401  (their config sections, before any config loads)
