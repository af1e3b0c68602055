"""Ex-MCR: extending a leaf space into a frozen base space (the objective, the modality-centric pools, the leaf head), the import of the authors' Ex-MCR heads, and unified models of N spaces.

See docs/architecture.md for what this package may import."""
