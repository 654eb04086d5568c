"""What the search hands out: a frozen candidate, its provenance, and the ask/tell contract."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from worker.lossexpr import Node
from worker.lossexpr.coefficients import pruned_coefficients


class UnknownCandidateError(KeyError):
    """`tell` got an id the search (or evaluation plan) never handed out, or has already moved past."""

    def __str__(self) -> str:
        return f"unknown candidate id {self.args[0]!r}: never handed out by this search"


class AlreadyToldError(ValueError):
    """`tell` got a second result for the same candidate."""


ORIGINS = ("seed", "init", "crossover", "mutation", "elite", "promoted", "cma")  # seed: ga.seed_losses; promoted: a higher rung


@dataclass(frozen=True)
class Candidate:
    """One loss to evaluate.  `id` is unique within a run and deterministic given the seed."""

    id: str
    tree: Node  # coefficients included
    origin: str  # one of ORIGINS
    generation: int  # GA generation, or CMA-ES iteration in the cma phase
    parents: tuple[str, ...] = ()
    phase: str = "discovery"  # discovery | cma
    ops: tuple[str, ...] = ()  # mutations applied after crossover/copy, in order (provenance only)

    @property
    def coefficients(self) -> tuple[float, ...]:
        """The pruned coefficient vector (what CMA-ES tunes) of this candidate's tree."""
        return tuple(pruned_coefficients(self.tree))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (`from_json` inverts it).

        The tree's part is built once per candidate and shared by every later call (a candidate and its
        tree are immutable; nothing edits the returned data): the scheduler saves the whole search state,
        every candidate in it, after each batch of tells and of asks, and rebuilding each tree's nested
        dicts every time made a save cost ~0.4 ms per candidate in Python -- 0.4 s per save at 1,000
        candidates, twice per freed slot, which is what kept a long steady-state run's slots idle."""
        tree = self.__dict__.get("_tree_json")
        if tree is None:
            tree = self.tree.to_json()
            object.__setattr__(self, "_tree_json", tree)  # a cache, not a field: eq, hash and repr ignore it
        out: dict[str, Any] = {
            "id": self.id,
            "tree": tree,
            "origin": self.origin,
            "generation": self.generation,
            "parents": list(self.parents),
            "phase": self.phase,
        }
        if self.ops:
            out["ops"] = list(self.ops)
        return out

    @staticmethod
    def from_json(data: dict[str, Any]) -> "Candidate":
        return Candidate(
            id=data["id"],
            tree=Node.from_json(data["tree"]),
            origin=data["origin"],
            generation=int(data["generation"]),
            parents=tuple(data.get("parents", ())),
            phase=data.get("phase", "discovery"),
            ops=tuple(data.get("ops", ())),
        )


class AskTell(Protocol):
    """Pure search: no I/O, deterministic given its seed and the results it is told."""

    def ask(self) -> list[Candidate]:
        """Every candidate that can be handed out now (each exactly once); [] while waiting."""

    def tell(self, candidate_id: str, fitness: float) -> None:
        """The fitness of a handed-out candidate, in any order; failures are told as 0.0."""

    @property
    def finished(self) -> bool:
        """True once there is nothing more to ask and everything handed out has been told."""

    def export_state(self) -> dict[str, Any]:
        """Plain JSON-able data from which `import_state` rebuilds an identical search."""

    def task_overrides(self, candidate_id: str) -> dict[str, Any]:
        """Training settings of this candidate that differ from the run's [task] (a rung's steps, an
        evaluation cell's seed and training fraction) -- TaskConfig field names, and `seed_offset`: add
        this to task.seed (a promotion's further training seeds); {} for none."""

    @property
    def phase(self) -> str:
        """What the search is doing now (discovery | cma | evaluate | done), as `glo status` shows it."""

    @property
    def generation(self) -> int:
        """The generation (or CMA-ES iteration, or 0) being worked on."""

    def outstanding(self) -> list[Candidate]:
        """Candidates handed out and not yet told."""

    def resolved_without_training(self, since: int = 0) -> list[Any]:
        """Candidates the search settled itself (invalid, elite, duplicate, filtered), from index `since`;
        each has `.candidate`, `.fitness`, `.reason` and `.duplicate_of`."""

    def best(self) -> tuple[Candidate, float] | None:
        """The best candidate so far and its fitness (None before any result)."""

    def top_trees(self) -> list[tuple[Candidate, float]]:
        """The distinct trees the search ranks highest, best first (what CMA-ES and reports start from)."""

    def population(self) -> list[tuple[Candidate, float | None]]:
        """The current generation and each member's fitness (None while it is being trained)."""

    def history(self) -> list[dict[str, Any]]:
        """One entry per closed generation (best, mean, best tree)."""

    def stats(self) -> dict[str, Any]:
        """Counters for `glo status` and the logs (handed out, told, invalid, duplicates, ...)."""
