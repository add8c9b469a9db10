"""Strain, rotation and out-of-plane tilt maps from Bragg vectors (``fourdcrystal strain``)."""
