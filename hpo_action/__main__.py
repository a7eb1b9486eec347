"""`python -m hpo_action` runs the CLI, as the `hpo-action` script does."""

from hpo_action.cli import main

main()
