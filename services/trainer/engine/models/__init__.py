"""Model preparation: the default model converted from its GGUF, and the tiny random-init test model."""
