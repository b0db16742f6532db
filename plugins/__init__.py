"""Bundled shoal plugins: each module registers commands with the shell's command registry."""
