"""Helpers shared by tests of every tier: no test module imports another."""
