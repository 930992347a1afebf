"""Tuning as a first-class step: every arm of a study searched with the same Optuna budget on
validation only (``lightclf tune``); the study's fits then use each arm's pick."""
