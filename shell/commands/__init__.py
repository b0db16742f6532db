"""The shell's built-in commands, one module per group, registered into one registry.

The CLI's ``-c``/``run``, scripts and the REPL all start from :func:`build_registry`.
"""

from __future__ import annotations

from shell.registry import Registry


def build_registry() -> Registry:
    from shell.commands import builtin, cluster, discover, elect, kv, lab, lease, parallel, ssh

    registry = Registry()
    for module in (kv, lease, elect, cluster, discover, parallel, ssh, lab, builtin):
        module.register(registry)
    return registry
