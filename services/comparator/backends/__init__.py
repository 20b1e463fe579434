"""Backends the comparator runs itself (beside the MLX engine on the trainer pool): PyTorch + PEFT."""
