"""One trial: the base model loaded once, an adapter per trial, and the TRL SFT run that reports to the pruner."""
