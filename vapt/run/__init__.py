"""Running experiments: training configs, the run record, the training loop, the sweep protocol, benchmarks."""
