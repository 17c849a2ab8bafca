"""``python -m gpt2_cli``: what ``torchrun -m gpt2_cli train ...`` runs."""

from gpt2_cli.main import main

main()
