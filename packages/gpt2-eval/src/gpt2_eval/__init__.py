"""Evaluation of gpt2 models on lm-evaluation-harness tasks."""
