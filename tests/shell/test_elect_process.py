"""``elect proclaim|resign|campaign`` through the registry against a real local cluster, and the
REPL's "elections" completion source on the same cluster.

The commands run as the CLI runs them (:func:`shell.batch.run_one`), with a context whose
connection is a control client on a local agent's socket instead of one over SSH.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.client import ControlClient
from agent.concurrency import Election, Session, b64, current_leader
from shell.batch import run_one
from shell.commands import build_registry
from shell.commands.context import Context
from shell.registry import Options, Registry
from shell.repl.sources import ClusterSources
from tests.agent.conftest import ClusterRunner, eventually

pytestmark = pytest.mark.process


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[ClusterRunner]:
    runner = ClusterRunner(tmp_path)
    yield runner
    runner.close()


class LocalContext(Context):
    """A context whose cluster connection is a local agent's control socket."""

    def __init__(self, registry: Registry, client: ControlClient) -> None:
        super().__init__(registry, Options())
        self.local = client

    async def client(self) -> ControlClient:
        return self.local


async def shoal(ctx: Context, *tokens: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run_one(ctx, tokens, out, err, "")
    return code, out.getvalue(), err.getvalue()


def test_proclaim_and_resign_act_for_a_leader_held_elsewhere(clusters: ClusterRunner) -> None:
    cluster = clusters.make(3)
    registry = build_registry()

    async def story() -> None:
        await cluster.start()
        shell_client = await ControlClient.connect(str(cluster.socket_path("node1")))
        holder_client = await ControlClient.connect(str(cluster.socket_path("node2")))
        ctx = LocalContext(registry, shell_client)
        holder = LocalContext(registry, holder_client)

        # nobody leads yet: exit 4
        code, _, err = await shoal(ctx, "elect", "proclaim", "jobs", "x")
        assert code == 4 and "no leader" in err
        assert (await shoal(ctx, "elect", "resign", "jobs"))[0] == 4

        # alice campaigns through the registry (a stream that holds until lost)
        held_out, held_err = io.StringIO(), io.StringIO()
        campaign = asyncio.create_task(
            run_one(holder, ["elect", "campaign", "jobs", "alice"], held_out, held_err, "")
        )

        async def elected() -> bool:
            return "elected" in held_out.getvalue()

        await eventually(elected, 10, "alice to be elected")
        alice = await current_leader(shell_client, "jobs")
        assert alice is not None and alice.value == b"alice"

        # bob queues behind her (another process, here a library client)
        bob_session = await Session.open(
            await ControlClient.connect(str(cluster.socket_path("node3")))
        )
        bob = Election(bob_session, "jobs")
        bob_waits = asyncio.create_task(bob.campaign(b"bob"))

        async def queued() -> bool:
            got = await shell_client.call(
                "kv.get", key=b64(b"jobs/"), range_end=b64(b"jobs0"), count_only=True
            )
            return int(got["count"]) == 2

        await eventually(queued, 10, "bob to queue up")

        # proclaim: the new value and the key; --json has name, key, value, create_revision
        code, out, err = await shoal(ctx, "elect", "proclaim", "jobs", "alice-v2")
        assert code == 0, err
        assert "alice-v2" in out and alice.key.decode() in out
        code, out, err = await shoal(ctx, "--json", "elect", "proclaim", "jobs", "alice-v3")
        assert code == 0, err
        assert json.loads(out) == {
            "name": "jobs",
            "key": alice.key.decode(),
            "value": "alice-v3",
            "create_revision": alice.create_revision,
        }
        assert (await shoal(ctx, "elect", "leader", "jobs"))[1].strip() == "alice-v3"

        # the campaign notices and keeps holding
        async def told() -> bool:
            return "'alice-v3'" in held_out.getvalue()

        await eventually(told, 10, "the campaign to report the proclaimed value")
        assert "'alice-v2'" in held_out.getvalue()
        assert not campaign.done()

        # a --key that does not lead: exit 1, nothing changes
        code, _, err = await shoal(
            ctx, "elect", "proclaim", "jobs", "bob-now", "--key", bob.key.decode()
        )
        assert code == 1 and "does not lead" in err and "not proclaimed" in err
        code, _, err = await shoal(
            ctx, "elect", "resign", "jobs", "--key", f"{bob_session.lease_id:x}"
        )
        assert code == 1 and "not resigned" in err
        assert (await shoal(ctx, "elect", "leader", "jobs"))[1].strip() == "alice-v3"

        # resign alice by her lease id: bob leads, and alice's campaign ends with the reason
        alice_hex = alice.key.decode().rsplit("/", 1)[1]
        code, out, err = await shoal(ctx, "--json", "elect", "resign", "jobs", "--key", alice_hex)
        assert code == 0, err
        data: dict[str, Any] = json.loads(out)
        assert data["resigned"] == alice.key.decode() and data["value"] == "alice-v3"
        assert data["leader"]["key"] == bob.key.decode() and data["leader"]["value"] == "bob"
        assert await asyncio.wait_for(campaign, 10) == 1
        assert "leadership lost: resigned by another client" in held_out.getvalue()
        await asyncio.wait_for(bob_waits, 10)

        # the stale key again: exit 1, bob still leads
        code, _, err = await shoal(ctx, "elect", "resign", "jobs", "--key", alice.key.decode())
        assert code == 1 and "not resigned" in err
        code, out, _ = await shoal(ctx, "elect", "resign", "jobs")
        assert code == 0 and "no leader now" in out and bob.key.decode() in out

        # completion: election (and lock) names, from keys NAME/<their own lease in hex>
        lock_session = await Session.open(shell_client)
        locked = Election(lock_session, "/locks/deploy")
        await locked.campaign(b"")
        await shell_client.call("kv.put", key=b64(b"/counters/1"), value=b64(b"x"))
        sources = ClusterSources(shell_client.call, lambda: []).sources()
        assert await sources["elections"]("") == ["/locks/deploy"]
        await bob.campaign(b"bob-again")
        sources = ClusterSources(shell_client.call, lambda: []).sources()
        assert await sources["elections"]("") == ["/locks/deploy", "jobs"]
        assert await sources["elections"]("j") == ["jobs"]
        for s in (bob_session, lock_session):
            await s.close()
        for c in (shell_client, holder_client, bob_session.client):
            await c.close()

    clusters.run(story())
