"""Job states from real HTCondor 25.14 event logs (tests/golden/condor), read by htcondor2's own parser."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import htcondor2
import pytest

from condor.events import EventLogError, EventLogFollower, JobStatus, apply_event, next_status, read_event_log

GOLDEN = Path(__file__).parent / "golden" / "condor"
RM_REASON = "via condor_rm (by user submituser)"


def golden_events(name: str) -> list[htcondor2.JobEvent]:
    return list(htcondor2.JobEventLog(str(GOLDEN / name)).events(stop_after=0))


def event_chunks(name: str) -> list[str]:
    """A golden log's text cut after each event (an event ends with a line "...")."""
    chunks, current = [], []
    for line in (GOLDEN / name).read_text().splitlines(keepends=True):
        current.append(line)
        if line == "...\n":
            chunks.append("".join(current))
            current = []
    assert not current, "golden log does not end at an event boundary"
    return chunks


def only(statuses: dict[str, JobStatus]) -> JobStatus:
    assert len(statuses) == 1, statuses
    return next(iter(statuses.values()))


def local_epoch(text: str) -> float:
    """An event log's wall-clock time read the way HTCondor's reader does: in this process's local zone."""
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def test_success_is_done_with_host_and_ordered_timestamps():
    s = only(read_event_log(GOLDEN / "success.job.log"))
    assert (s.job_id, s.state, s.glo_state, s.exit_code, s.exit_signal) == ("1.0", "completed", "done", 0, None)
    assert s.host == "slot1_1@vm"
    assert s.reason == "exit code 0"
    assert s.last_event == "JOB_TERMINATED"
    assert (s.evictions, s.holds, s.hold_code, s.remove_reason) == (0, 0, None, "")
    assert s.submitted_at == local_epoch("2026-11-26 16:46:38")
    assert s.started_at == local_epoch("2026-11-26 16:46:49")
    assert s.ended_at == local_epoch("2026-11-26 16:46:54")


def test_nonzero_exit_is_failed():
    s = only(read_event_log(GOLDEN / "fail.job.log"))
    assert (s.job_id, s.state, s.glo_state, s.exit_code, s.exit_signal) == ("2.0", "completed", "failed", 3, None)
    assert s.reason == "exit code 3"


def test_signal_is_failed_without_exit_code():
    s = only(read_event_log(GOLDEN / "signal.job.log"))
    assert (s.job_id, s.state, s.glo_state, s.exit_code, s.exit_signal) == ("12.0", "completed", "failed", None, 9)
    assert s.reason == "killed by signal 9"


def test_missing_input_is_held_with_code_and_reason():
    s = only(read_event_log(GOLDEN / "held.job.log"))
    assert (s.job_id, s.state, s.glo_state, s.hold_code, s.hold_subcode) == ("3.0", "held", "held", 13, 2)
    assert s.hold_reason.startswith("Transfer input files failure at access point vm")
    assert "does_not_exist.txt" in s.hold_reason
    assert s.reason == f"held: {s.hold_reason} (code 13/2)"
    # The failed input transfer ended the claim (004) before the hold (012); the job never executed.
    assert (s.evictions, s.holds, s.started_at, s.host) == (1, 1, None, "")


def test_held_then_removed_is_lost_and_keeps_the_hold_reason():
    held = only(read_event_log(GOLDEN / "held.job.log"))
    s = only(read_event_log(GOLDEN / "held_then_removed.job.log"))
    assert (s.state, s.glo_state, s.remove_reason, s.last_event) == ("removed", "lost", RM_REASON, "JOB_ABORTED")
    assert (s.hold_reason, s.hold_code, s.hold_subcode) == (held.hold_reason, 13, 2)
    assert s.reason == f"removed: {RM_REASON}; was held: {held.hold_reason} (code 13/2)"
    assert s.ended_at == local_epoch("2026-11-26 16:47:47")


def test_removed_while_running_is_lost_with_the_eviction_counted():
    s = only(read_event_log(GOLDEN / "removed.job.log"))
    assert (s.job_id, s.state, s.glo_state, s.evictions) == ("4.0", "removed", "lost", 1)
    assert s.reason == f"removed: {RM_REASON}"
    assert (s.exit_code, s.exit_signal, s.hold_code, s.host) == (None, None, None, "slot1_1@vm")


def test_multi_six_procs_all_done_and_the_released_one_counts_its_hold():
    statuses = read_event_log(GOLDEN / "multi.job.log")
    assert sorted(statuses) == [f"5.{p}" for p in range(6)]
    assert all(s.glo_state == "done" and s.exit_code == 0 for s in statuses.values())
    assert statuses["5.5"].holds == 1 and statuses["5.5"].hold_code is None  # the hold is over
    assert all(s.holds == 0 for job, s in statuses.items() if job != "5.5")


def test_fold_sees_the_hold_and_release_of_proc_5():
    events = golden_events("multi.job.log")
    held_at = next(i for i, e in enumerate(events) if e.type == htcondor2.JobEventType.JOB_HELD)
    assert events[held_at + 1].type == htcondor2.JobEventType.JOB_RELEASED

    statuses: dict[str, JobStatus] = {}
    for event in events[: held_at + 1]:
        statuses = apply_event(statuses, event)
    five = statuses["5.5"]
    assert (five.state, five.glo_state, five.hold_code, five.hold_subcode) == ("held", "held", 1, 0)
    assert five.reason == "held: via condor_hold (by user submituser) (code 1/0)"
    assert {j: s.state for j, s in statuses.items()} == {
        "5.0": "running", "5.1": "running", "5.2": "running", "5.3": "idle", "5.4": "idle", "5.5": "held",
    }

    before = dict(statuses)
    after = apply_event(statuses, events[held_at + 1])
    assert statuses == before, "apply_event must not change its input"
    assert (after["5.5"].state, after["5.5"].glo_state, after["5.5"].hold_reason) == ("idle", "submitted", "")
    assert after["5.5"].holds == 1

    for event in events[held_at + 2 :]:
        after = apply_event(after, event)
    assert after == read_event_log(GOLDEN / "multi.job.log")


def test_next_status_is_pure_and_starts_a_job_at_submit():
    submit, *_ = golden_events("success.job.log")
    s = next_status(None, submit)
    assert s == JobStatus(job_id="1.0", state="idle", submitted_at=s.submitted_at, last_event="SUBMIT")
    assert s.glo_state == "submitted" and s.reason == "idle in the queue"


def test_removed_job_stays_removed_whatever_follows():
    events = golden_events("removed.job.log")
    statuses: dict[str, JobStatus] = {}
    for event in events:
        statuses = apply_event(statuses, event)
    execute = next(e for e in events if e.type == htcondor2.JobEventType.EXECUTE)
    assert apply_event(statuses, execute) == statuses


def test_an_eviction_after_a_hold_leaves_the_job_held():
    by_type = {e.type: e for e in golden_events("held.job.log")}
    statuses: dict[str, JobStatus] = {}
    for kind in ("SUBMIT", "JOB_HELD", "JOB_EVICTED"):  # real events, in an order a running job can log them
        statuses = apply_event(statuses, by_type[htcondor2.JobEventType[kind]])
    s = statuses["3.0"]
    assert (s.state, s.evictions, s.holds, s.hold_code, s.last_event) == ("held", 1, 1, 13, "JOB_EVICTED")


def test_legacy_format_gives_the_same_final_state_as_success():
    legacy = only(read_event_log(GOLDEN / "success.job.log.format_LEGACY"))
    success = only(read_event_log(GOLDEN / "success.job.log"))
    no_times = {"submitted_at": None, "started_at": None, "ended_at": None}
    assert replace(legacy, job_id="1.0", **no_times) == replace(success, **no_times)
    assert legacy.job_id == "16.0"
    assert legacy.submitted_at < legacy.started_at <= legacy.ended_at
    # "MM/DD HH:MM:SS" has no year: HTCondor's reader takes the current one.
    submitted = time.localtime(legacy.submitted_at)
    assert (submitted.tm_mon, submitted.tm_mday, submitted.tm_hour, submitted.tm_min) == (11, 26, 16, 51)
    assert submitted.tm_year == time.localtime().tm_year


def test_pybind_logs_parse():
    submitted = read_event_log(GOLDEN / "pybind.submitted_job.log")
    assert sorted(submitted) == ["6.0", "6.1"]
    assert all(s.glo_state == "done" for s in submitted.values())
    assert {s.host for s in submitted.values()} == {"slot1_1@vm", "slot1_2@vm"}

    s = only(read_event_log(GOLDEN / "pybind.hold_release_remove.job.log"))
    # Held (no reason text in this event), released, then removed through Schedd.act (no Reason either).
    assert (s.job_id, s.state, s.glo_state, s.holds) == ("7.0", "removed", "lost", 1)
    assert (s.hold_code, s.remove_reason) == (None, "")
    assert s.reason == "removed"


def test_follower_reads_only_the_events_appended_since_the_last_poll(tmp_path):
    chunks = event_chunks("multi.job.log")
    cut = next(i for i, c in enumerate(chunks) if c.startswith("012 ")) + 1  # just after 5.5 was held
    log = tmp_path / "job.log"
    log.write_text("".join(chunks[:cut]))

    follower = EventLogFollower(log)
    first = follower.poll()
    assert sorted(first) == [f"5.{p}" for p in range(6)]
    assert first["5.5"].state == "held"
    assert follower.events_read == cut
    assert follower.poll() == {}

    with log.open("a") as f:
        f.write("".join(chunks[cut:]))
    second = follower.poll()
    assert follower.events_read == len(chunks) == 52  # the first part was not read again
    assert second == read_event_log(GOLDEN / "multi.job.log")  # every job changed after the cut
    assert second["5.5"].holds == 1  # the hold was counted once, not replayed
    assert follower.poll() == {}
    follower.close()


def test_follower_reports_only_jobs_that_changed(tmp_path):
    chunks = event_chunks("pybind.submitted_job.log")
    # Cut after 6.1's execute: afterwards only image-size, transfer and terminate events of both procs follow.
    cut = max(i for i, c in enumerate(chunks) if c.startswith("001 (006.001.000)")) + 1
    log = tmp_path / "job.log"
    log.write_text("".join(chunks[:cut]))
    with EventLogFollower(log) as follower:
        assert {j: s.state for j, s in follower.poll().items()} == {"6.0": "running", "6.1": "running"}
        for i, chunk in enumerate(chunks[cut:], start=cut):
            with log.open("a") as f:
                f.write(chunk)
            changed = follower.poll()
            job = "6.0" if "(006.000.000)" in chunk.splitlines()[0] else "6.1"
            # An event that leaves the status as it was (a second 040 in a row) reports nothing.
            assert list(changed) in ([job], []), (i, chunk)
            if chunk.startswith("005 "):
                assert changed[job].glo_state == "done"
        assert follower.statuses == read_event_log(GOLDEN / "pybind.submitted_job.log")


def test_follower_waits_for_a_half_written_event(tmp_path):
    text = (GOLDEN / "success.job.log").read_text()
    chunks = event_chunks("success.job.log")
    head = "".join(chunks[:4])  # up to the execute event
    half = len(head) + len(chunks[4]) // 2
    log = tmp_path / "job.log"
    log.write_text(text[:half])
    follower = EventLogFollower(log, stall_grace_s=60)
    assert only(follower.poll()).state == "running"
    assert follower.poll() == {}  # the partial image-size event: neither an error nor an event yet
    with log.open("a") as f:
        f.write(text[half:])
    assert only(follower.poll()).glo_state == "done"
    assert follower.events_read == 8


def test_follower_before_the_log_exists_then_after(tmp_path):
    log = tmp_path / "sub" / "job.log"
    follower = EventLogFollower(log)
    assert follower.poll() == {}
    assert follower.poll() == {}
    log.parent.mkdir()
    log.write_text("")  # created, nothing logged yet
    assert follower.poll() == {}
    shutil.copyfile(GOLDEN / "success.job.log", log)
    assert only(follower.poll()).glo_state == "done"


@pytest.mark.parametrize("name", ["success.sub", "condor_status.idle.json", "success.job.out"])
def test_a_file_that_is_not_an_event_log_raises(name):
    path = GOLDEN / name
    with pytest.raises(EventLogError, match=re.escape(str(path))):
        read_event_log(path)
    # A follower first allows for an event being written, then gives up after its grace period.
    follower = EventLogFollower(path, stall_grace_s=3600)
    assert follower.poll() == {}
    with pytest.raises(EventLogError, match="is not an HTCondor job event log"):
        EventLogFollower(path, stall_grace_s=0).poll()


def test_follower_skips_a_corrupt_spot_like_htcondor_but_a_whole_read_refuses_it(tmp_path):
    chunks = event_chunks("success.job.log")
    log = tmp_path / "job.log"
    log.write_text("".join(chunks[:3]) + "this is not an event\nnor this\n...\n" + "".join(chunks[3:]))
    with pytest.raises(EventLogError, match="has unreadable text.*after 3 event"):
        read_event_log(log)
    # HTCondor's reader skips the bad lines, one per call, and resumes at the next event.
    follower = EventLogFollower(log, stall_grace_s=3600)
    for _ in range(6):
        follower.poll()
    assert follower.statuses == read_event_log(GOLDEN / "success.job.log")
    assert follower.events_read == 8


@pytest.mark.parametrize("head", [1, 2, 3, 5])
def test_follower_keeps_an_event_whose_first_bytes_came_alone(head, tmp_path):
    # HTCondor's reader consumes the 1-3 bytes "0", "04", "040" of a header and would then drop the event;
    # with 4+ bytes it waits a second and rewinds by itself.
    chunks = event_chunks("success.job.log")
    log = tmp_path / "job.log"
    log.write_text(chunks[0] + chunks[1][:head])
    follower = EventLogFollower(log, stall_grace_s=3600)
    assert only(follower.poll()).last_event == "SUBMIT"
    if head <= 3:  # (a poll that meets 4+ bytes takes a second: one is enough)
        assert follower.poll() == {}
    with log.open("a") as f:
        f.write(chunks[1][head:] + "".join(chunks[2:]))
    assert only(follower.poll()).glo_state == "done"
    assert follower.events_read == 8


def test_missing_log_raises_for_a_whole_read(tmp_path):
    with pytest.raises(EventLogError, match=re.escape(str(tmp_path / "nope.log"))):
        read_event_log(tmp_path / "nope.log")


def test_empty_log_has_no_jobs(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("")
    assert read_event_log(log) == {}
