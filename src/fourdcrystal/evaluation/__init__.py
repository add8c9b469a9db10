"""Evaluation: kinematic truth, scoring, tuning of both detectors, figures."""
