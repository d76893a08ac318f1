"""Experiment tools on top of the training core: sweeps, scaling-law fits, ensembles, distillation data,
reports and replications."""
