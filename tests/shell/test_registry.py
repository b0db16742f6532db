"""The command registry: parsing, validation, did-you-mean, help and exit codes."""

from __future__ import annotations

from typing import Any

import pytest

from agent.client import ControlError
from shell.commands import build_registry
from shell.registry import (
    Arg,
    Command,
    NotFound,
    Options,
    Registry,
    Result,
    Unavailable,
    UsageError,
    exit_code,
)


async def echo(ctx: Any, args: dict[str, Any]) -> Result:
    return Result(args)


def fake() -> Registry:
    r = Registry()
    r.register(
        Command(
            "kv get",
            "read",
            echo,
            [
                Arg("key", completion="keys"),
                Arg("prefix", type=bool, flag=True, default=False),
                Arg("limit", type=int, flag=True, default=0),
                Arg("order", flag=True, choices=("asc", "desc"), default="asc"),
            ],
            aliases=("kv read",),
            examples=("kv get /a",),
        )
    )
    r.register(Command("kv put", "write", echo, [Arg("key"), Arg("value")]))
    r.register(Command("members", "who", echo))
    r.register(Command("help", "help", echo, [Arg("command", required=False, many=True)]))
    return r


def test_parse_positionals_flags_and_defaults() -> None:
    cmd, args = fake().parse(["kv", "get", "/a", "--limit=3", "--prefix"])
    assert cmd.name == "kv get"
    assert args == {"key": "/a", "prefix": True, "limit": 3, "order": "asc"}
    _, args = fake().parse(["kv", "read", "--order", "desc", "--", "--weird"])
    assert args["key"] == "--weird" and args["order"] == "desc"
    _, args = fake().parse(["help", "kv", "get"])
    assert args == {"command": ["kv", "get"]}


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["kv", "get"], "missing KEY"),
        (["kv", "get", "/a", "extra"], "unexpected"),
        (["kv", "get", "/a", "--limit", "x"], "not a valid int"),
        (["kv", "get", "/a", "--limit"], "needs a value"),
        (["kv", "get", "/a", "--order", "up"], "not one of asc, desc"),
        (["kv", "get", "/a", "--prefx"], "did you mean --prefix"),
        (["kv", "get", "/a", "--prefix=1"], "takes no value"),
        (["kv", "gte", "/a"], "did you mean `kv get`"),
        (["kv"], "`kv` needs a command"),
        (["membres"], "did you mean 'members'"),
        ([], "no command"),
    ],
)
def test_usage_errors(tokens: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        fake().parse(tokens)


def test_duplicate_names_are_refused() -> None:
    r = fake()
    with pytest.raises(ValueError, match="already registered"):
        r.register(Command("other", "x", echo, aliases=("members",)))


def test_help_per_command_group_and_overall() -> None:
    r = fake()
    text = r.help(["kv", "get"])
    assert text.startswith("usage: kv get KEY [--prefix] [--limit LIMIT] [--order ORDER]")
    assert "aliases: kv read" in text and "examples:\n  kv get /a" in text
    assert "one of asc, desc" in text
    assert "kv put" in r.help(["kv"])
    overall = r.help()
    assert "members" in overall and "SHOAL_JSON" in overall
    with pytest.raises(UsageError):
        r.help(["nope"])


def test_exit_codes() -> None:
    assert exit_code(UsageError("x")) == 2
    assert exit_code(NotFound("x")) == 4
    assert exit_code(Unavailable("x")) == 3
    assert exit_code(TimeoutError()) == 3
    for code in ("no-leader", "timeout", "connection-lost"):
        assert exit_code(ControlError(code, "m", {})) == 3
    for code in ("not-found", "lease-not-found", "key-not-found"):
        assert exit_code(ControlError(code, "m", {})) == 4
    assert exit_code(ControlError("bad-request", "m", {})) == 2
    assert exit_code(ControlError("internal", "m", {})) == 1
    assert exit_code(RuntimeError("boom")) == 1


def test_options_from_env_and_flags() -> None:
    opts = Options.from_env({"SHOAL_JSON": "1", "SHOAL_TIMEOUT": "2.5", "SHOAL_CLUSTER": "c"})
    assert opts.json and opts.timeout == 2.5 and opts.cluster == "c"
    opts, rest = Options().take(["kv", "get", "--json", "/a", "--timeout=1", "--cluster", "x"])
    assert rest == ["kv", "get", "/a"] and opts.json and opts.timeout == 1.0
    assert opts.cluster == "x"
    with pytest.raises(UsageError):
        Options.from_env({"SHOAL_TIMEOUT": "soon"})


def test_builtin_registry_has_the_commands() -> None:
    r = build_registry()
    for name in (
        "kv get", "kv put", "kv del", "kv ls", "kv watch", "kv txn", "kv compact",
        "lease grant", "lease revoke", "lease keepalive", "lease ttl", "lease ls",
        "elect leader", "elect observe", "leader", "members", "machines",
        "cluster status", "help", "exit", "plugins",
    ):  # fmt: skip
        assert r.lookup(name) is not None, name
    assert r.lookup("kv rm") is r.lookup("kv del")
    kv_get = r.lookup("kv get")
    assert kv_get is not None and kv_get.args[0].completion == "keys"
