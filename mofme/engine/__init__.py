"""Training, evaluation and inference machinery (tiled inference lives in :mod:`mofme.engine.tiling`)."""
