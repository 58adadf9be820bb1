"""Thin Hydra entry points around plain run(cfg) functions."""
