"""The study: space, sampler and pruner, storage, trial slots, heartbeats and orphans, worker processes."""
