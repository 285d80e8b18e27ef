"""Compute stages of Network Dissection: Broden reading, synthetic data, models,
extraction, exact quantiles, IoU tally kernels, scoring, reports, rotations."""
