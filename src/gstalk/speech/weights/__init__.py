"""The motion prior shipped with gstalk (``prior.safetensors``) and its model card (``MODEL_CARD.md``), made
by ``gstalk prior train`` from ``../shared/data/corpus``; loaded by ``speech.prior.load_prior("builtin")``."""
