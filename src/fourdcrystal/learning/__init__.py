"""Learning stage: the FFT cross-correlation U-Net, the quartet dataset, detector augmentation, training."""
