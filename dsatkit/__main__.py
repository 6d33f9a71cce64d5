"""`python -m dsatkit ...` (and `accelerate launch -m dsatkit train recipe.yaml`)."""

from dsatkit.cli import main

main()
