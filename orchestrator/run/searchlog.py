"""The search's log: its asks and tells between two saves of its whole state.

Why: a search's exported state grows with the run (every candidate, key and archive entry: megabytes after a
few thousand steady-state trainings), and the scheduler used to save all of it after every result -- the
scheduler's own cost per result then grew with the run until it could no longer keep a large pool busy.
The search is deterministic given the order of its ask/tell calls, so the scheduler saves the whole state
only every so often (`whole_save_due`) and, in between, one small entry per call, in the same transaction as
what the call did (db.models.SearchLogEntry).  A resume imports the last whole state and replays the entries
after it (`replay`): the same search, exactly.  Each ask entry lists the ids it handed out, and the replay
checks them, so a replay that would go another way stops with an error instead of continuing differently.
"""

from __future__ import annotations

from typing import Any

from orchestrator.errors import SchedulerError
from orchestrator.search.candidate import AskTell

#: Entries written between two whole saves at least; beyond that, a quarter of the entries logged so far, so
#: that the whole saves (each the size of the run so far) cost a constant amount per entry on average.
LOG_MIN = 64


def whole_save_due(logged_since: int | None, logged_total: int) -> bool:
    """Save the whole state now?  `logged_since`: entries stored since the last whole save (None: none yet)."""
    return logged_since is None or logged_since >= max(LOG_MIN, logged_total // 4)


def ask_entry(ids: list[str]) -> dict[str, Any]:
    return {"ask": ids}


def tell_entry(candidate_id: str, fitness: float) -> dict[str, Any]:
    return {"tell": candidate_id, "fitness": fitness}


def replay(search: AskTell, entries: list[dict[str, Any]]) -> None:
    """Repeat the logged calls on a search imported from the last whole state."""
    for n, entry in enumerate(entries, 1):
        if "tell" in entry:
            search.tell(entry["tell"], float(entry["fitness"]))
            continue
        got = [c.id for c in search.ask()]
        if got != entry["ask"]:
            raise SchedulerError(
                f"resume: entry {n} of {len(entries)} of the search log handed out {entry['ask'][:5]} but the "
                f"replay hands out {got[:5]}: this GLO's search does not continue the stored one (was the run "
                f"started by another version?)")
