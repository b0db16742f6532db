"""Package the agent as one content-addressed zipapp: ``shoal-agent-<sha256[:12]>.pyz``.

A node needs nothing but python3 to run it (``python3 X.pyz serve --config F``). The name is a
hash of the contents, and the zip is built with fixed timestamps and order, so the same agent
source always yields the same file: the shell can tell from the name alone whether a node
already has this exact agent and skip the upload.
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import tempfile
import zipfile
from pathlib import Path

import agent

AGENT_DIR = Path(agent.__file__).resolve().parent
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
"""Every entry's timestamp: the earliest a zip can hold, so rebuilds are byte-identical."""

MAIN = b'''"""shoal agent zipapp: serve, ctl (agent CLI), bridge SOCKET (control fallback)."""
import sys

if len(sys.argv) > 1 and sys.argv[1] == "bridge":
    from agent.bridge import main as bridge_main

    sys.exit(bridge_main(sys.argv[2:]))
from agent.__main__ import main

sys.exit(main())
'''


def _sources(root: Path = AGENT_DIR) -> list[tuple[str, bytes]]:
    """(archive name, content) of every .py file of the agent package, in a stable order."""
    files = []
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        files.append((f"agent/{path.relative_to(root).as_posix()}", path.read_bytes()))
    return [("__main__.py", MAIN), *files]


def content_hash(files: list[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()


def zipapp_name(digest: str) -> str:
    return f"shoal-agent-{digest[:12]}.pyz"


def compiled(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Unchecked hash-based .pyc files (PEP 552) for the agent's modules, beside the sources.

    Python never writes bytecode caches for code imported from a zip, so without these every
    agent start compiles every module again (a third of its start-up CPU). A node whose python3
    has another bytecode version ignores them (bad magic) and compiles the sources as before.
    """
    out = []
    for name, data in files:
        if not name.startswith("agent/") or not name.endswith(".py"):
            continue
        code = compile(data, name, "exec", dont_inherit=True)
        pyc = bytearray(importlib.util.MAGIC_NUMBER)
        pyc += (0b01).to_bytes(4, "little")  # hash-based, not checked against the source
        pyc += importlib.util.source_hash(data)
        pyc += marshal.dumps(code)
        out.append((name + "c", bytes(pyc)))
    return out


def build_agent_zipapp(cache_dir: str | os.PathLike[str]) -> Path:
    """Return the zipapp of the current agent source in ``cache_dir``, building it if missing."""
    files = _sources()
    cache = Path(cache_dir)
    target = cache / zipapp_name(content_hash(files))
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".shoal-agent-", suffix=".pyz", dir=cache)
    try:
        with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w") as archive:
            for name, data in [*files, *compiled(files)]:
                info = zipfile.ZipInfo(name, ZIP_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def zipapp_digest(path: Path) -> str:
    """The 12-hex-digit content hash a zipapp's name carries."""
    return path.stem.rsplit("-", 1)[-1]
