"""C-MCR itself: the objective (noise, pseudo pairs, inter- and intra-space terms), memory retrieval, the projectors and ConnectedModel, the training loop, named recipes, and the import of the authors' C-MCR checkpoints.

See docs/architecture.md for what this package may import."""
