"""The shell's built-in commands, one module per group, registered into one registry.

The CLI's ``-c``/``run``, scripts and the REPL all start from :func:`build_registry`.
"""

from __future__ import annotations

from shell.registry import Registry


def build_registry() -> Registry:
    from shell.commands import builtin, cluster, elect, kv, lease, parallel

    registry = Registry()
    for module in (kv, lease, elect, cluster, parallel, builtin):
        module.register(registry)
    return registry
