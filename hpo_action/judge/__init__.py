"""Evidence: per-example evaluation, forgetting sets, the statistics and the promotion decision."""
