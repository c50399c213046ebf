"""Scoring: the confusion matrix and its report, the scoring loop shared by eval, training
validation and ``bench --compare``, and the live scorer of ``rtseg run --labels``."""
