"""Data: load, check and split the rows, and tokenize them once (cached) for every trial."""
