"""Test doubles that implement edgecut's real interfaces honestly (no torch)."""
