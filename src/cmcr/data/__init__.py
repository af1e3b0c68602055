"""What cmcr reads and writes: embedding stores, atomic files and folder locks, safetensors weights, files -> encoder inputs (decode, resample, crop), and generated embeddings for examples and tests.

See docs/architecture.md for what this package may import."""
