"""`python -m hpo_action` runs the CLI, as the `hpo-action` script does."""

from .cli import main

main()
