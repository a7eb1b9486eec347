"""The Optuna backend (search.backend optuna, the default): the only package, with its optuna_compat.py, that
imports Optuna. backend.py implements the search interface (hpo_action/search/backend.py) on top of the others."""
