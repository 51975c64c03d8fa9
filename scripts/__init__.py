"""Maintenance scripts; importable so that tests run the same code."""
