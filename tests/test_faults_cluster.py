"""A real two-node Ray cluster on this machine: a head and a second node started with `ray start`
(1 CPU each, separate ports and temp dirs), a search whose trials run on both nodes, then the
second node killed mid-search: the search finishes on the head.

On loopback: the nodes are started with --node-ip-address=127.0.0.1, but Ray 2.x rewrites that
address to the machine's outward one (ray._private.services.resolve_ip_for_localhost) unless
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with that switch `ray start --address` refuses to add a
node. So this cluster's nodes listen on the machine's interfaces; it is guarded by a token of its
own (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN), never ~/.ray's. See docs/reliability.md.
"""
from __future__ import annotations

import time
import uuid

import pytest
from fault_tools import RayNode, World, free_port, poll, search_args, train_teacher, trained, trial_rows

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path, tmp_path_factory):
    world = World(tmp_path, home=train_teacher(tmp_path_factory.mktemp("home")))
    env = world.env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex)
    port = free_port()
    head = RayNode(world, "h", ["--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                                "--include-dashboard=false"], env)
    nodes = [head]
    try:
        head_id = head.node_id()
        second = RayNode(world, "w", [f"--address=127.0.0.1:{port}"], env)
        nodes.append(second)
        yield world, env, f"127.0.0.1:{port}", (head, head_id), (second, second.node_id())
    finally:
        for proc in world.procs:
            proc.kill()
        for node in nodes:
            node.kill()
        left = world.cleanup()
        assert not left, left


def test_trials_run_on_both_nodes_and_the_search_survives_losing_one(cluster):
    world, env, address, (head, head_id), (second, second_id) = cluster
    args = search_args(world.space, "two", trials=4, epochs=2, extra=("--address", address, "--no-early-stopping"))
    cli = world.cli(*args, RAY_AUTH_MODE=env["RAY_AUTH_MODE"], RAY_AUTH_TOKEN=env["RAY_AUTH_TOKEN"])

    def second_node_busy():
        rows = trial_rows(world.db("two"))
        on = lambda node, state: [n for n, r in rows.items() if r["attrs"].get("node_id") == node  # noqa: E731
                                  and r["state"] == state and "worker_pid" in r["attrs"]]
        done_there, running_there = on(second_id, "COMPLETE"), on(second_id, "RUNNING")
        head_used = on(head_id, "COMPLETE") + on(head_id, "RUNNING")
        return (done_there and running_there and head_used) and running_there[0]

    victim = poll(second_node_busy, 240, every=0.2, what="a trial done and one running on the second node")
    second.kill()  # the node's raylet, agents and workers at once
    killed_at = time.monotonic()
    assert cli.wait(300) == 0, cli.output
    rows = trial_rows(world.db("two"))
    assert len(trained(rows)) == 4, {n: (r["state"], r["attrs"].get("failure")) for n, r in rows.items()}
    nodes = {n: r["attrs"]["node_id"] for n, r in trained(rows).items()}
    assert set(nodes.values()) == {head_id, second_id}, nodes  # the results say which node ran each
    assert rows[victim]["attrs"].get("retries") == 1 and nodes[victim] == head_id, rows[victim]
    assert "worker lost, retrying" in cli.output
    print(f"search finished {time.monotonic() - killed_at:.0f}s after the second node was killed; nodes {nodes}")
