"""The shoal agent: the process that runs on every node of a cluster.

It depends on the Python standard library only, so that it ships as one zipapp to any machine
with python3 (3.11+). Nothing here imports from ``shell/``.
"""

__version__ = "0.1.0"
