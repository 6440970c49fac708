"""Fault injection on the real CLI (`autokd search` as a subprocess in its own process group):
SIGKILL at five moments then resume, Ctrl-C, two searches on one study, a Ray worker killed.

What holds: no trained trial is lost or changed by a kill; trials running at a kill are recorded
FAIL when the same command resumes (never left RUNNING); the study ends with exactly --trials
trained trials; SQLite's integrity check passes after every fault; no process is left behind.
"""
from __future__ import annotations

import os
import random
import signal
import time

import pytest
from fault_tools import World, integrity, poll, reap, search_args, tagged, train_teacher, trained, trial_rows

pytestmark = [pytest.mark.faults, pytest.mark.slow]

RNG = random.Random(7)  # the "random" kill delays, reproducible


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    left = w.cleanup()
    assert not left, f"processes left behind: {left}"


@pytest.fixture(scope="module")
def teacher_home(tmp_path_factory):
    return train_teacher(tmp_path_factory.mktemp("home"))


def running(rows: dict, on_worker: bool = False) -> dict:
    """Trials asked and accepted but not told; ``on_worker``: a worker already reported an epoch."""
    return {n: r for n, r in rows.items() if r["state"] == "RUNNING" and not r["attrs"].get("rejected")
            and (not on_worker or "worker_pid" in r["attrs"])}


# ------------------------------------------------------------------ SIGKILL at five moments
def _while_teacher_trains(cli, world, study):
    cli.wait_for(r"training teacher", 60)
    time.sleep(RNG.uniform(0.5, 2.0))


def _while_ray_starts(cli, world, study):
    cli.wait_for(r"trials trained so far", 120)  # the study and config.json were just written


def _while_trials_run(cli, world, study):
    poll(lambda: running(trial_rows(world.db(study))), 120, what="a running trial")
    time.sleep(RNG.uniform(0.5, 2.0))


def _inside_a_write(cli, world, study):
    """SQLite's rollback journal exists exactly while a write transaction is open."""
    poll(lambda: running(trial_rows(world.db(study))), 120, what="a running trial")
    journal = world.db(study).with_name("study.db-journal")
    poll(journal.exists, 120, every=0.0005, what="an open write transaction")


def _right_after_a_trial_is_recorded(cli, world, study):
    cli.wait_for(r"trial \d+: (done|stopped early)", 150)


MOMENTS = [("while the teacher trains", _while_teacher_trains), ("while Ray starts", _while_ray_starts),
           ("while trials run", _while_trials_run), ("inside an SQLite write", _inside_a_write),
           ("right after a trial was recorded", _right_after_a_trial_is_recorded)]


def _kept(row: dict) -> tuple:
    """What a kill must never change of a trained trial: its state and values, its rung scores (the
    ladder's table on resume) and the compute it spent (the --compute total on resume)."""
    attrs = row["attrs"]
    return row["state"], row["values"], str(sorted((attrs.get("epoch_val_accuracy") or {}).items())), \
        attrs.get("compute")


def test_sigkill_at_five_moments_then_the_same_command_resumes(world):
    args = search_args(world.space, "k", trials=3, epochs=1)
    kept: dict[int, tuple] = {}       # every trained trial seen after any kill: (state, values)
    were_running: set[int] = set()    # trials RUNNING in the study right after a kill
    for what, moment in MOMENTS:
        cli = world.cli(*args)
        moment(cli, world, "k")
        cli.kill()
        assert not reap(world.tag, timeout=20), f"processes outlived the driver killed {what}"
        teachers = world.home / "teachers"
        for folder in (p for p in teachers.iterdir() if not p.name.startswith(".")) if teachers.exists() else ():
            assert {"channel_plan.json", "model.safetensors", "card.json"} <= {f.name for f in folder.iterdir()}
        rows = trial_rows(world.db("k"))
        if world.db("k").exists():
            assert integrity(world.db("k")) == "ok", what
        for n, before in kept.items():
            assert _kept(rows[n]) == before, f"trial {n} changed by the kill {what}"
        kept.update({n: _kept(r) for n, r in trained(rows).items()})
        stuck = {n for n, r in rows.items() if r["state"] == "RUNNING"}  # until the next run starts
        were_running |= stuck
    assert len(kept) < 3, "the kills came too late to test a resume"
    assert were_running, "no kill hit a running trial"

    final = world.cli(*args)
    assert final.wait(240) == 0, final.output
    if stuck:
        assert f"resuming: {len(stuck)} trial(s) left running by an earlier driver recorded as failed" \
            in final.output, final.output
    rows = trial_rows(world.db("k"))
    assert integrity(world.db("k")) == "ok"
    assert len(trained(rows)) == 3, {n: r["state"] for n, r in rows.items()}
    assert {n: _kept(rows[n]) for n in kept} == kept  # 0 trained trials lost, nor their rungs and compute
    assert all(r["attrs"]["compute"] > 0 and r["attrs"]["epoch_val_accuracy"] for r in trained(rows).values())
    assert not [n for n, r in rows.items() if r["state"] in ("RUNNING", "WAITING")]
    for n in were_running:
        assert rows[n]["state"] == "FAIL" and rows[n]["attrs"]["failure"].startswith("interrupted"), rows[n]


# ------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_stops_within_seconds_records_running_trials_and_says_how_to_resume(world, teacher_home):
    world.home = teacher_home
    args = search_args(world.space, "c", trials=2, epochs=2)
    cli = world.cli(*args)
    poll(lambda: running(trial_rows(world.db("c")), on_worker=True), 150, what="a trial past its first epoch")
    sent = time.monotonic()
    cli.signal_group(signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    assert cli.wait(60) == 130, cli.output
    took = time.monotonic() - sent
    assert took < 15, f"Ctrl-C took {took:.1f}s"
    assert "Resume with the same command (study c)" in cli.output and "Traceback" not in cli.output
    rows = trial_rows(world.db("c"))
    assert not [n for n, r in rows.items() if r["state"] in ("RUNNING", "WAITING")]
    stopped = [r for r in rows.values() if r["attrs"].get("failure") == "interrupted (Ctrl-C)"]
    assert stopped and all(r["state"] == "FAIL" for r in stopped)
    assert not reap(world.tag, timeout=20)

    again = world.cli(*args)  # the resume the message asks for
    assert again.wait(240) == 0, again.output
    assert len(trained(trial_rows(world.db("c")))) == 2


# ------------------------------------------------------------------ two searches, one study
def test_a_second_search_on_the_same_study_is_refused_with_one_line(world, teacher_home):
    world.home = teacher_home
    first = world.cli(*search_args(world.space, "l", trials=2, epochs=1))
    first.wait_for(r"trials trained so far", 120)
    second = world.cli(*search_args(world.space, "l", trials=3, epochs=1))
    assert second.wait(90) == 2, second.output
    lines = [line for line in second.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "is being searched by another autokd process" in lines[0], second.output
    assert first.wait(240) == 0, first.output
    rows = trial_rows(world.db("l"))
    assert integrity(world.db("l")) == "ok" and len(trained(rows)) == 2


# ------------------------------------------------------------------ a Ray worker killed
def test_a_ray_worker_killed_mid_trial_is_retried_and_the_study_completes(world, teacher_home):
    world.home = teacher_home
    cli = world.cli(*search_args(world.space, "w", trials=2, epochs=2, extra=("--no-early-stopping",)))
    victim, row = next(iter(poll(lambda: running(trial_rows(world.db("w")), on_worker=True), 150,
                                 what="a trial past its first epoch").items()))
    pid = row["attrs"]["worker_pid"]
    assert pid in tagged(world.tag)  # a worker of this search, nothing else
    os.kill(pid, signal.SIGKILL)
    assert cli.wait(240) == 0, cli.output
    rows = trial_rows(world.db("w"))
    assert len(trained(rows)) == 2
    after = rows[victim]
    assert "worker lost, retrying" in cli.output
    assert after["attrs"].get("retries") == 1 and after["attrs"]["worker_pid"] != pid, after
    assert after["state"] in ("COMPLETE", "PRUNED"), after  # FailureConfig(max_failures=1): one retry
