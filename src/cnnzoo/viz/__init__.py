"""Plots and drawings; imports nothing from the layers above it."""
