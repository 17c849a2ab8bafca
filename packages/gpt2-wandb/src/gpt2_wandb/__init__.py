"""Weights & Biases for ``gpt2 train --logger wandb``."""
