"""Simulation stage: oriented supercells, abTEM multislice quartets, kinematic truth, Zarr shards, the dataset manifest."""
