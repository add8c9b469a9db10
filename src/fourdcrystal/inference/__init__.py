"""Inference: what the network sees, the two detectors (network and py4DSTEM) behind one call, peak extraction, writers, the `predict` CLI."""
