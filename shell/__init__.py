"""The operator's side of shoal: command registry, cluster client, SSH, discovery, REPL and TUI."""
