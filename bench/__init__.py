"""Benchmarks (`make bench`): figures as ratios against raw pgmq measured in the same run."""
