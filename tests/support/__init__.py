"""Helpers shared by tests: history checkers and other test-only machinery."""
