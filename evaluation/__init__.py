"""Scoring PALM submissions: metrics, validation, grand-challenge evaluation and a leaderboard.

Torch-free on purpose: the evaluation container installs numpy, scipy, scikit-learn,
SimpleITK and grand-challenge-metrics, nothing else. Keep it that way.
"""
