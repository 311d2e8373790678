"""Builds, refinements and staged rollouts: the work the fleet does for its devices."""
