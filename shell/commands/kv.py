"""``kv get|put|del|ls|watch|txn|compact``: the replicated store, from the operator's side.

Keys and values go to the agent base64-encoded (the control API's shape, see agent/kvserver.py);
``--json`` prints the agent's answer as is, so scripts see the same schema as ``agent ctl``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

from agent.kv import prefix_end
from shell.commands.context import Context
from shell.registry import Arg, Command, NotFound, Registry, Result, UsageError


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def text(data: str) -> str:
    return base64.b64decode(data).decode(errors="replace")


def key_range(key: str, prefix: bool) -> dict[str, str]:
    raw = key.encode()
    return {"key": b64(raw), "range_end": b64(prefix_end(raw))} if prefix else {"key": b64(raw)}


KEY = Arg("key", "the key", completion="keys")
PREFIX = Arg("prefix", "every key starting with KEY", type=bool, flag=True, default=False)
KV_COLUMNS = [("KEY", "key"), ("VALUE", "value"), ("REVISION", "mod_revision"), ("LEASE", "lease")]


def kv_rows(kvs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**kv, "key": text(kv["key"]), "value": text(kv.get("value", "")), "lease": kv.get("lease")}
        for kv in kvs
    ]


async def get(ctx: Context, a: dict[str, Any]) -> Result:
    res = await ctx.call(
        "kv.get",
        **key_range(a["key"], a["prefix"]),
        revision=a["rev"],
        limit=a["limit"],
        keys_only=a["keys_only"],
        serializable=a["serializable"],
        timeout=ctx.options.timeout,
    )
    if not res["kvs"]:
        raise NotFound(f"{a['key']}: not found")
    if a["keys_only"]:
        return Result(res, rows=kv_rows(res["kvs"]), columns=[("KEY", "key")])
    if not a["prefix"]:
        return Result(res, raw=base64.b64decode(res["kvs"][0]["value"]))
    return Result(res, rows=kv_rows(res["kvs"]), columns=KV_COLUMNS)


async def put(ctx: Context, a: dict[str, Any]) -> Result:
    lease = a["lease"] or 0
    if a["ttl"]:
        lease = int((await ctx.call("lease.grant", ttl=a["ttl"]))["id"])
    res = await ctx.call(
        "kv.put",
        key=b64(a["key"].encode()),
        value=b64(a["value"].encode()),
        lease=lease,
        timeout=ctx.options.timeout,
    )
    return Result(res, text=f"OK (revision {res['header']['revision']})")


async def delete(ctx: Context, a: dict[str, Any]) -> Result:
    res = await ctx.call(
        "kv.delete", **key_range(a["key"], a["prefix"]), timeout=ctx.options.timeout
    )
    return Result(res, text=str(res["deleted"]))


async def ls(ctx: Context, a: dict[str, Any]) -> Result:
    res = await ctx.call(
        "kv.get", **key_range(a["prefix"], True), keys_only=True, timeout=ctx.options.timeout
    )
    keys = [text(kv["key"]) for kv in res["kvs"]]
    return Result(
        {"header": res["header"], "keys": keys},
        rows=[{"key": k} for k in keys],
        columns=[("KEY", "key")],
    )


def _event_result(ev: dict[str, Any]) -> Result:
    key = text(ev["kv"]["key"])
    value = "" if ev["type"] == "DELETE" else text(ev["kv"].get("value", ""))
    return Result(ev, text=f"{ev['type']} {key}" + (f" {value}" if value else ""))


async def watch(ctx: Context, a: dict[str, Any]) -> Result:
    stream = ctx.stream(
        "kv.watch",
        **key_range(a["key"], a["prefix"]),
        start_revision=a["rev"],
        prev_kv=a["prev_kv"],
    )

    async def events() -> AsyncIterator[Result]:
        async for item in stream:
            for ev in item.get("events", []):
                yield _event_result(ev)

    return Result(stream=events())


def _encode_ops(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for op in ops:
        op = dict(op)
        for field in ("key", "value", "range_end"):
            if isinstance(op.get(field), str):
                op[field] = b64(op[field].encode())
        out.append(op)
    return out


async def txn(ctx: Context, a: dict[str, Any]) -> Result:
    try:
        doc = json.loads(a["request"])
    except ValueError as exc:
        raise UsageError(f"kv txn: REQUEST is not JSON: {exc}")
    if not isinstance(doc, dict):
        raise UsageError("kv txn: REQUEST must be a JSON object")
    compare = []
    for c in doc.get("compare", []):
        c = dict(c)
        c["key"] = b64(str(c["key"]).encode())
        if c.get("target") == "value" and isinstance(c.get("value"), str):
            c["value"] = b64(c["value"].encode())
        compare.append(c)
    res = await ctx.call(
        "kv.txn",
        compare=compare,
        success=_encode_ops(doc.get("success", [])),
        failure=_encode_ops(doc.get("failure", [])),
        timeout=ctx.options.timeout,
    )
    return Result(res, text="SUCCESS" if res.get("succeeded") else "FAILURE")


async def compact(ctx: Context, a: dict[str, Any]) -> Result:
    res = await ctx.call("kv.compact", revision=a["revision"], timeout=ctx.options.timeout)
    return Result(res, text=f"compacted revision {a['revision']}")


def lease_id(value: str) -> int:
    return int(value, 16)


def register(registry: Registry) -> None:
    registry.register(
        Command(
            "kv get",
            "read a key (or every key under a prefix)",
            get,
            [
                KEY,
                PREFIX,
                Arg("rev", "read at this revision (0: the latest)", type=int, flag=True, default=0),
                Arg("limit", "at most this many keys (0: all)", type=int, flag=True, default=0),
                Arg("keys_only", "keys without values", type=bool, flag=True, default=False),
                Arg(
                    "serializable",
                    "this member's copy, without a quorum round",
                    type=bool,
                    flag=True,
                    default=False,
                ),
            ],
            examples=("kv get /config/db", "kv get /config --prefix", "kv get /a --json"),
            description="A single key prints its value as is (binary-safe); exit 4 if missing.",
        )
    )
    registry.register(
        Command(
            "kv put",
            "write a key",
            put,
            [
                KEY,
                Arg("value", "the value"),
                Arg(
                    "lease",
                    "attach to this lease (hex id)",
                    type=lease_id,
                    flag=True,
                    completion="leases",
                ),
                Arg(
                    "ttl",
                    "grant a lease of this many seconds and attach the key",
                    type=int,
                    flag=True,
                ),
            ],
            aliases=("kv set",),
            examples=("kv put /config/db postgres://db1", "kv put /lock/me x --ttl 30"),
        )
    )
    registry.register(
        Command(
            "kv del",
            "delete a key (or a prefix); prints how many went",
            delete,
            [KEY, PREFIX],
            aliases=("kv delete", "kv rm"),
            examples=("kv del /a", "kv del /tmp/ --prefix"),
        )
    )
    registry.register(
        Command(
            "kv ls",
            "the keys under a prefix (keys only)",
            ls,
            [Arg("prefix", "the prefix", required=False, default="/", completion="keys")],
            examples=("kv ls", "kv ls /config/"),
        )
    )
    registry.register(
        Command(
            "kv watch",
            "stream changes to a key or prefix until Ctrl-C",
            watch,
            [
                KEY,
                PREFIX,
                Arg("rev", "replay history from this revision", type=int, flag=True, default=0),
                Arg("prev_kv", "include the previous value", type=bool, flag=True, default=False),
            ],
            examples=("kv watch /config --prefix", "kv watch /a --rev 1 --json"),
        )
    )
    registry.register(
        Command(
            "kv txn",
            "compare-and-swap: a JSON request with text keys and values",
            txn,
            [Arg("request", "JSON {compare: [...], success: [...], failure: [...]}")],
            examples=(
                """kv txn '{"compare":[{"key":"/a","target":"version","result":"=","value":0}],"""
                """ "success":[{"op":"put","key":"/a","value":"1"}]}'""",
            ),
        )
    )
    registry.register(
        Command(
            "kv compact",
            "forget history before a revision",
            compact,
            [Arg("revision", "the revision", type=int)],
            examples=("kv compact 1000",),
        )
    )
