"""Few-shot meta-learning of the projector: algorithms, inner/outer loop, episodes, runs."""
