"""Completion: commands, subcommands and flags from the registry; live names from sources."""

from __future__ import annotations

import asyncio
from typing import Any

from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from shell.commands import build_registry
from shell.commands.kv import lease_id
from shell.repl.completer import ShellCompleter, completion_name, split_words
from shell.repl.sources import Cache, election_names, next_segment
from tests.repl.conftest import FAKE_SOURCES, Driver, Fake, drive, fake_registry


def completer() -> ShellCompleter:
    registry = fake_registry(Fake())
    return ShellCompleter(lambda: registry, lambda: FAKE_SOURCES)


def offered(text: str) -> list[str]:
    """What the REPL offers with the cursor at the end of ``text`` (live sources included)."""

    async def collect() -> list[str]:
        doc = Document(text, len(text))
        return [
            c.display_text
            async for c in completer().get_completions_async(doc, CompleteEvent(True))
        ]

    return asyncio.run(collect())


def test_commands_and_groups() -> None:
    assert offered("") == [
        "?", "echo", "exit", "help", "kv", "lease", "machines", "plugins", "quit", "slow",
    ]  # fmt: skip
    assert offered("e") == ["echo", "exit"]


def test_subcommands_of_a_group() -> None:
    assert offered("kv ") == ["get", "put", "watch"]
    assert offered("kv w") == ["watch"]
    assert offered("lease ") == ["forget", "revoke"]


def test_flags_of_the_command_and_the_global_ones() -> None:
    assert offered("kv get /a --") == [
        "--prefix", "--rev", "--json", "--no-legend", "--cluster", "--timeout", "--help",
    ]  # fmt: skip
    assert offered("kv get /a --p") == ["--prefix"]
    assert "--prefix" not in offered("kv get --prefix /a --")


def test_keys_complete_one_path_segment_at_a_time() -> None:
    assert offered("kv get /") == ["/app/", "/other"]
    assert offered("kv get /app/") == ["/app/db/", "/app/name"]
    assert offered("kv get /app/d") == ["/app/db/"]
    assert offered("kv get /app/db/") == ["/app/db/host", "/app/db/port"]
    assert offered("kv put /app/name ") == []  # VALUE has no source


def test_live_sources_after_flags_and_by_type() -> None:
    assert offered("machines ") == ["m-1a2b", "m-3c4d"]
    assert offered("machines m-3") == ["m-3c4d"]
    assert offered("lease revoke 694d7c1") == ["694d7c1a", "694d7c1b"]  # names "leases"
    assert offered("lease forget 694d7c1") == []  # the type alone names no source
    assert offered("kv get --rev 3 /ap") == ["/app/"]  # a flag's value is skipped


def test_help_completes_command_names() -> None:
    assert offered("help k") == ["kv"]
    assert offered("help kv ") == ["get", "put", "watch"]


def test_only_the_last_command_of_a_line() -> None:
    assert offered("echo a; kv g") == ["get"]
    assert split_words('kv put /a "half') == (["kv", "put", "/a"], "half")


def test_no_registry_yet_offers_nothing() -> None:
    c = ShellCompleter(lambda: None, lambda: FAKE_SOURCES)
    assert list(c.get_completions(Document("kv"), CompleteEvent(True))) == []


def test_a_failing_source_completes_quietly() -> None:
    async def broken(typed: str) -> list[str]:
        raise ConnectionError("cluster down")

    registry = fake_registry(Fake())
    c = ShellCompleter(lambda: registry, lambda: {"keys": broken})

    async def collect() -> list[str]:
        doc = Document("kv get /a")
        return [x.text async for x in c.get_completions_async(doc, CompleteEvent(True))]

    assert asyncio.run(collect()) == []


def test_cluster_sources_ask_the_agent_and_hide_its_records() -> None:
    """The real sources' requests, against a fake control call: one range per directory."""
    import base64

    from shell.repl.sources import ClusterSources

    store = ["/app/a", "/app/b/c", "/_shoal/machines/m1", "/z"]
    asked: list[tuple[str, dict[str, Any]]] = []

    async def call(method: str, **params: Any) -> Any:
        asked.append((method, params))
        if method == "kv.get":
            start = base64.b64decode(params["key"]).decode()
            keys = [k for k in store if k.startswith(start)]
            return {"kvs": [{"key": base64.b64encode(k.encode()).decode()} for k in keys]}
        if method == "machines":
            return {"machines": [{"id": "m2"}, {"id": "m1"}]}
        if method == "lease.list":
            return {"leases": [255, 16]}
        raise AssertionError(method)

    async def everything(method: str, **params: Any) -> Any:
        assert method == "kv.get" and params["keys_only"]
        assert base64.b64decode(params["key"]) == base64.b64decode(params["range_end"]) == b"\0"
        kvs = [("/app/a", 0), ("jobs/ff", 255), ("/locks/deploy/10", 16), ("/_shoal/x/ff", 255)]
        return {"kvs": [{"key": base64.b64encode(k.encode()).decode(), "lease": n} for k, n in kvs]}

    src = ClusterSources(call, lambda: ["node1", "node2"]).sources()

    async def go() -> list[list[str]]:
        return [
            await src["keys"]("/"),
            await src["keys"]("/a"),
            await src["keys"]("/app/"),
            await src["keys"]("/_"),
            await src["machines"](""),
            await src["leases"]("f"),
            await src["nodes"]("node2"),
        ]

    assert asyncio.run(go()) == [
        ["/app/", "/z"], ["/app/"], ["/app/a", "/app/b/"], ["/_shoal/"], ["m1", "m2"], ["ff"],
        ["node2"],
    ]  # fmt: skip
    ranges = [base64.b64decode(p["key"]).decode() for m, p in asked if m == "kv.get"]
    assert ranges == ["/", "/app/"]  # "/a" and "/_" came from the cache of "/"
    assert all(p["keys_only"] for m, p in asked if m == "kv.get")
    elections = ClusterSources(everything, list).sources()["elections"]
    assert asyncio.run(elections("")) == ["/locks/deploy", "jobs"]
    assert asyncio.run(elections("/")) == ["/locks/deploy"]


def test_election_names_are_parents_of_keys_named_after_their_lease() -> None:
    kvs = [
        ("jobs/694d7c1a", 0x694D7C1A),
        ("jobs/694d7c1b", 0x694D7C1B),
        ("/elections/scheduler/2a", 42),
        ("/counters/1", 0),  # hex-looking, but on no lease
        ("/app/cafe", 7),  # on a lease, but not named after it
        ("/_shoal/machines/ff", 255),  # the cluster's own records
        ("ab", 171),  # no parent
        ("/x/", 0),
    ]
    assert election_names(kvs) == ["/elections/scheduler", "jobs"]


def test_lease_and_election_arguments_name_their_sources() -> None:
    """Sources are named on the arguments, never guessed from a type or a name."""
    registry = build_registry()
    sources = {
        (command.name, arg.name): completion_name(arg)
        for command in registry.commands.values()
        for arg in command.args
    }
    lease_args = [
        (command.name, arg.name)
        for command in registry.commands.values()
        for arg in command.args
        if arg.type is lease_id
    ]
    assert ("kv put", "lease") in lease_args and ("lease revoke", "id") in lease_args
    assert all(sources[a] == "leases" for a in lease_args)
    for name in (
        "elect leader",
        "elect observe",
        "elect campaign",
        "elect proclaim",
        "elect resign",
    ):
        assert sources[(name, "name")] == "elections", name
    assert sources[("lock", "name")] == "keys"


def test_next_segment_and_cache() -> None:
    assert next_segment("/a", ["/a/b/c", "/ab", "/b"]) == ["/a/", "/ab"]
    now = [0.0]
    cache = Cache(ttl=3, clock=lambda: now[0])
    fetched: list[int] = []

    async def fetch() -> list[str]:
        fetched.append(1)
        return ["x"]

    async def go() -> None:
        await cache.get("k", fetch)
        await cache.get("k", fetch)
        now[0] = 5
        await cache.get("k", fetch)

    asyncio.run(go())
    assert len(fetched) == 2


def test_tab_in_a_real_session_completes_and_runs() -> None:
    """Tab in a PromptSession: ``ech<Tab>`` becomes ``echo``, ``kv g<Tab>`` ``kv get``."""

    async def script(d: Driver) -> None:
        for keys in ("ech\t", " hi\r", "kv g\t", " /app/n\t", "\r", "\x04"):
            await d.line(keys)  # a step at a time: completion is asynchronous

    code, d = drive(script)
    assert code == 0, d.err_text()
    assert "echo hi" in d.out_text(), d.err_text()
    assert "value of /app/name" in d.out_text()
