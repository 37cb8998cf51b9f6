"""SwAV pretraining.

Multi-crop data, ResNet trunk + projection head + prototypes, Sinkhorn, swapped-prediction loss."""
