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
from orchestrator.search.candidate import AskTell, Candidate

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


class SearchLog:
    """The scheduler's side of the log: the calls made since the last store, and when to save whole."""

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] = []
        self._last: dict[str, Any] | None = None
        self._since: int | None = None  # entries stored since the last whole save (None: not saved whole yet)
        self._total = 0

    def asked(self, candidates: list[Candidate]) -> None:
        """An ask and what it handed out; an empty ask right after an empty ask changes nothing: not logged."""
        entry = ask_entry([c.id for c in candidates])
        if entry != self._last:
            self._add(entry)

    def told(self, candidate_id: str, fitness: float) -> None:
        self._add(tell_entry(candidate_id, fitness))

    def _add(self, entry: dict[str, Any]) -> None:
        self._pending.append(entry)
        self._last = entry

    @property
    def pending(self) -> bool:
        """Calls made that no transaction has stored yet."""
        return bool(self._pending)

    def take(self, search: AskTell, whole: bool = False) -> dict[str, Any]:
        """What to store of the search with this transaction (the keyword arguments `state` and `log` of
        db.store's `record_asked` / `mark_told`): its whole state when due (`whole_save_due`) or asked for,
        else the calls made since the last store as entries."""
        entries, self._pending = self._pending, []
        self._total += len(entries)
        if whole or whole_save_due(self._since, self._total):
            self._since = 0
            return {"state": search.export_state(), "log": []}
        self._since = (self._since or 0) + len(entries)
        return {"state": None, "log": entries}

    def resumed(self, search: AskTell, entries: list[dict[str, Any]]) -> None:
        """Replay the entries stored after the last whole state on the search imported from it, and go on
        counting from them."""
        replay(search, entries)
        self._since = self._total = len(entries)
        self._last = entries[-1] if entries else None


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
