"""Search configuration: frozen dataclasses whose defaults are the GLO paper's numbers.

Every number of the method is a field here so that a run records exactly what it used
(`SearchConfig.to_dict()` is stored with the run; `from_dict` builds it back from TOML/JSON).
Validation errors name the offending field (`ga.elites`, `cma.sigma0`, ...), because the
scheduler builds these from user-written TOML.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from orchestrator.errors import ConfigError
from worker.lossexpr.tree import ARITY, MAX_DEPTH, MAX_NODES, Node

#: Element names a weight can be given to: every operator, plus the integer constants 1 and -1.
#: This is also the canonical order of `GAConfig.node_weights`: weighted draws walk the table in
#: this order, so the same weights written in any order (TOML, sorted JSON) breed the same trees.
ELEMENTS = ("log", "x", "y", "sqrt", "square", "+", "-", "*", "/", "1", "-1")

#: The paper's node weights: log, x, y = 3; sqrt = 2; square, +, -, *, /, 1, -1 = 1.
PAPER_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("log", 3.0), ("x", 3.0), ("y", 3.0), ("sqrt", 2.0), ("square", 1.0),
    ("+", 1.0), ("-", 1.0), ("*", 1.0), ("/", 1.0), ("1", 1.0), ("-1", 1.0),
)


#: How the first generation is drawn: "valid" (the default) conditions the paper's weighted grow on
#: a trainable tree (`worker.lossexpr.onehot.is_trainable`) and redraws canonical duplicates;
#: "paper" draws exactly as the paper does, invalid trees and all (they get fitness 0).
INIT_MODES = ("valid", "paper")

#: How offspring are made: "valid" redraws a child (new parents, new crossover and mutation) that cannot
#: train, that the zero-training filter rejects, or whose canonical form the run has already evaluated or
#: bred into this generation, so every slot of a generation is a new trainable tree; "paper" keeps every
#: child the paper's operators make (invalid ones get fitness 0, repeats are cache hits or duplicates).
#: Unset, it follows `init`: `init = "paper"` is the paper's GA throughout.
OFFSPRING_MODES = ("valid", "paper")

#: How discovery proceeds: "generational" (the paper's GA: a generation is bred once all its results are in)
#: or "steady-state" (no barrier: whenever fewer than `max_in_flight` candidates are outstanding one child is
#: bred from the current population, and each arriving result replaces a member -- regularized evolution,
#: Real et al. 2019, asynchronous as in ASHA).
MODES = ("generational", "steady-state")
#: Which member an arriving result replaces in steady-state mode: the oldest (regularized/aging evolution:
#: a lucky fitness cannot stay forever) or the worst by (rung, fitness).  Elites are never replaced.
REPLACEMENTS = ("oldest", "worst")
#: How steady-state mode picks parents.  "tournament" (the default, as in regularized evolution): the best of
#: `tournament_size` members drawn at random -- pressure from rank, not from the size of fitness gaps, which
#: matters here because trainable losses crowd into a narrow band of accuracies (0.95-0.98 on MNIST) where
#: the paper's roulette is almost uniform.  "roulette": the paper's fitness-proportional choice.
SELECTIONS = ("tournament", "roulette")
#: The steady-state-only GA settings (None in generational mode, and then not stored).
STEADY_FIELDS = ("max_trainings", "max_in_flight", "replacement", "selection", "tournament_size")

#: The value a stored search config written before `ga.offspring` existed resumes with: the paper's rule.
OFFSPRING_LEGACY = "paper"

#: A stored candidate as `glo best` prints it, RUN/CANDIDATE (an infix such as x/y also matches:
#: whoever can read the database tries it there first, then as a loss).
CANDIDATE_REF = re.compile(r"^[\w.-]+/[\w.-]+$")



def element_arity(element: str) -> int:
    """Arity of a weight element ("1" and "-1" are const leaves)."""
    return 0 if element in ("1", "-1") else ARITY[element]


def _num(name: str, value: Any, *, integer: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")


def _prob(name: str, value: Any) -> None:
    _num(name, value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")


@dataclass(frozen=True)
class GAConfig:
    """Discovery: the paper's genetic algorithm.

    `init_max_depth` counts edges from the root (DEAP's convention): depth 2 allows up to three
    levels, e.g. log(y) - x / y.  `max_tree_size`/`max_tree_depth` are our bloat cap (the paper
    lets trees grow freely); an offspring over the cap is replaced by its parent (DEAP's
    staticLimit).  `generations` is ours too (how long discovery runs).  `node_weights` lists
    every element that may be drawn: an element left out has weight 0.  Probabilities: crossover
    per pair of parents; each mutation per node (see `operators.mutate`).

    `init` (ours, see `INIT_MODES`): the paper draws depth-2 trees of which about 1 in 9 contains
    both x and y, so a population of 16 trains ~2 trees; "valid" draws from the same distribution
    conditioned on trainable trees.  `seed_losses` (ours, off by default): losses put into
    generation 0 before any random tree -- built-in names, infix, or RUN/CANDIDATE (the scheduler
    replaces those by the stored tree's infix when the run is created, so a run never depends on
    another run's database rows to resume).  `zero_training_filter` (ours): before a tree costs a
    training, `filters.check` optimises free predictions with it and rejects what cannot learn
    (fitness 0, reason stored); the scheduler applies it with the task's epsilon and class reduction.
    `offspring` (ours, see `OFFSPRING_MODES`; unset follows `init`): with the paper's rule most children
    of a small population are untrainable or repeats -- three `make demo` runs (population 8) trained 1,
    0 and 0 of their 6 second-generation children -- so "valid" redraws those.
    `mode` (ours, see `MODES`): "steady-state" drops the generation barrier (`orchestrator.search.steady`);
    its settings (`STEADY_FIELDS`) are refused in generational mode and filled in by `_check_mode`.
    """

    population_size: int = 80
    generations: int = 20
    elites: int = 6
    init_max_depth: int = 2
    node_weights: tuple[tuple[str, float], ...] = PAPER_WEIGHTS
    crossover_prob: float = 0.8
    p_const_step: float = 0.05
    p_replace_node: float = 0.05
    p_shrink: float = 0.025
    p_grow: float = 0.025
    max_tree_size: int = 128
    max_tree_depth: int = 40
    init: str = "valid"
    offspring: str | None = None
    seed_losses: tuple[str, ...] = ()
    zero_training_filter: bool = True
    mode: str = "generational"
    max_trainings: int | None = None
    max_in_flight: int | None = None
    replacement: str | None = None
    selection: str | None = None
    tournament_size: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.node_weights, Mapping):
            object.__setattr__(self, "node_weights", tuple((str(k), v) for k, v in self.node_weights.items()))
        else:
            object.__setattr__(self, "node_weights", tuple((str(k), v) for k, v in self.node_weights))
        for name in ("population_size", "generations", "elites", "init_max_depth", "max_tree_size", "max_tree_depth"):
            _num(f"ga.{name}", getattr(self, name), integer=True)
        if self.population_size < 2:
            raise ConfigError(f"ga.population_size must be at least 2, got {self.population_size}")
        if self.generations < 1:
            raise ConfigError(f"ga.generations must be at least 1, got {self.generations}")
        if not 0 <= self.elites < self.population_size:
            raise ConfigError(f"ga.elites must be in [0, population_size), got {self.elites}")
        if self.init_max_depth < 0:
            raise ConfigError(f"ga.init_max_depth must be >= 0, got {self.init_max_depth}")
        # Crossover can add two capped trees, mutation grows by a level: stay within Node's hard limits.
        if not 1 <= self.max_tree_size <= MAX_NODES // 3:
            raise ConfigError(f"ga.max_tree_size must be in [1, {MAX_NODES // 3}], got {self.max_tree_size}")
        if not 1 <= self.max_tree_depth <= (MAX_DEPTH - 2) // 2:
            raise ConfigError(f"ga.max_tree_depth must be in [1, {(MAX_DEPTH - 2) // 2}], got {self.max_tree_depth}")
        for name in ("crossover_prob", "p_const_step", "p_replace_node", "p_shrink", "p_grow"):
            _prob(f"ga.{name}", getattr(self, name))
        seen: set[str] = set()
        for element, weight in self.node_weights:
            if element not in ELEMENTS:
                raise ConfigError(f"ga.node_weights: unknown element {element!r} (known: {', '.join(ELEMENTS)})")
            if element in seen:
                raise ConfigError(f"ga.node_weights: element {element!r} given twice")
            seen.add(element)
            _num(f"ga.node_weights[{element}]", weight)
            if weight < 0:
                raise ConfigError(f"ga.node_weights[{element}] must be >= 0, got {weight!r}")
        object.__setattr__(self, "node_weights", tuple(sorted(self.node_weights, key=lambda ew: ELEMENTS.index(ew[0]))))
        if not any(w > 0 and element_arity(e) == 0 for e, w in self.node_weights):
            raise ConfigError("ga.node_weights needs at least one leaf (x, y, 1, -1) with a positive weight")
        if not isinstance(self.zero_training_filter, bool):
            raise ConfigError(f"ga.zero_training_filter must be true or false, got {self.zero_training_filter!r}")
        if self.init not in INIT_MODES:
            raise ConfigError(f"ga.init must be one of {', '.join(INIT_MODES)}, got {self.init!r}")
        if self.offspring is None:
            object.__setattr__(self, "offspring", self.init)
        if self.offspring not in OFFSPRING_MODES:
            raise ConfigError(f"ga.offspring must be one of {', '.join(OFFSPRING_MODES)}, got {self.offspring!r}")
        if isinstance(self.seed_losses, str) or not isinstance(self.seed_losses, (list, tuple)):
            raise ConfigError(f"ga.seed_losses must be a list of losses, got {self.seed_losses!r}")
        object.__setattr__(self, "seed_losses", tuple(self.seed_losses))
        if len(self.seed_losses) > self.population_size:
            raise ConfigError(f"ga.seed_losses: {len(self.seed_losses)} losses for a population of "
                              f"{self.population_size}")
        for i, text in enumerate(self.seed_losses):
            seed_loss_tree(text, f"ga.seed_losses[{i}]")
        self._check_mode()

    def _check_mode(self) -> None:
        """Steady-state's settings, defaults filled in: `max_trainings` = population_size x generations (the
        same number of trainings a generational run of this size would hand out, about), `max_in_flight` =
        population_size, replacement "oldest", selection "tournament" of 4 (at most the population)."""
        if self.mode not in MODES:
            raise ConfigError(f"ga.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "generational":
            given = [f"ga.{name}" for name in STEADY_FIELDS if getattr(self, name) is not None]
            if given:
                raise ConfigError(f"{', '.join(given)}: only for ga.mode = \"steady-state\" (this is generational)")
            return
        defaults = {"max_trainings": self.population_size * self.generations, "max_in_flight": self.population_size,
                    "replacement": "oldest", "selection": "tournament",
                    "tournament_size": min(4, self.population_size)}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name in ("max_trainings", "max_in_flight", "tournament_size"):
            _num(f"ga.{name}", getattr(self, name), integer=True)
            if getattr(self, name) < 1:
                raise ConfigError(f"ga.{name} must be at least 1, got {getattr(self, name)}")
        if self.tournament_size > self.population_size:
            raise ConfigError(f"ga.tournament_size must be at most population_size ({self.population_size}), "
                              f"got {self.tournament_size}")
        if self.replacement not in REPLACEMENTS:
            raise ConfigError(f"ga.replacement must be one of {', '.join(REPLACEMENTS)}, got {self.replacement!r}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"ga.selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")

    def weights(self) -> dict[str, float]:
        return {e: float(w) for e, w in self.node_weights}


def seed_loss_tree(text: Any, name: str = "ga.seed_losses[]") -> "Node | None":
    """A seed loss's tree (built-in name or infix), or None for a RUN/CANDIDATE left to resolve."""
    from worker.lossexpr import LossExprError, resolve

    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{name} must be a loss (a name such as ce, infix text or RUN/CANDIDATE), got {text!r}")
    try:
        return resolve(text)
    except LossExprError as exc:
        if CANDIDATE_REF.match(text.strip()):
            return None
        raise ConfigError(f"{name}: {text!r} is not a loss: {exc}") from None


@dataclass(frozen=True)
class CMAConfig:
    """Coefficient optimization: pycma's CMA-ES on the pruned coefficients of the top-k trees.

    `popsize` None means pycma's default 4 + floor(3 ln N); `iterations` is the budget per tree
    (ours; the paper does not fix it in the text).  `options` are extra pycma options, numbers
    only (pycma evaluates string-valued options, which we never hand it).
    """

    top_k: int = 1
    sigma0: float = 1.5
    x0: float = 1.0
    popsize: int | None = None
    iterations: int = 50
    options: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        opts = self.options.items() if isinstance(self.options, Mapping) else self.options
        object.__setattr__(self, "options", tuple(sorted((str(k), v) for k, v in opts)))
        _num("cma.top_k", self.top_k, integer=True)
        if self.top_k < 0:
            raise ConfigError(f"cma.top_k must be >= 0, got {self.top_k}")
        _num("cma.sigma0", self.sigma0)
        if self.sigma0 <= 0:
            raise ConfigError(f"cma.sigma0 must be > 0, got {self.sigma0}")
        _num("cma.x0", self.x0)
        if self.popsize is not None:
            _num("cma.popsize", self.popsize, integer=True)
            if self.popsize < 2:
                raise ConfigError(f"cma.popsize must be >= 2, got {self.popsize}")
        _num("cma.iterations", self.iterations, integer=True)
        if self.iterations < 1:
            raise ConfigError(f"cma.iterations must be >= 1, got {self.iterations}")
        reserved = {"seed", "popsize", "maxiter", "verbose", "verb_log", "verb_disp", "randn"}
        for key, value in self.options:
            if key in reserved:
                raise ConfigError(f"cma.options[{key}] is set by the search itself")
            _num(f"cma.options[{key}]", value)


#: The most training seeds `fidelity.seeds` may ask per promotion (each one is a full training at its rung).
MAX_RUNG_SEEDS = 8


@dataclass(frozen=True)
class FidelityConfig:
    """Multi-fidelity promotion (successive halving inside each generation, as in Hyperband/ASHA; ours).

    Why: a loss that learns fastest in a short training often diverges in a longer one (its
    gradient grows as 1/y_true: short-horizon bias), so fitness at `task.steps` alone rewards
    losses that collapse later.  After a generation's results at `task.steps` (rung 0) are in, the
    best distinct `promote_fraction` of them (fitness > 0) is trained again at `steps[0]` (rung 1),
    the best fraction of those at `steps[1]`, and so on.  Members rank by (highest rung reached,
    fitness there).  `cma_rung`: the rung CMA-ES samples are trained at (0: task.steps; -1: the
    top rung), because tuning coefficients at a short budget mostly finds larger step sizes.
    `seeds`: each promotion is trained with this many training seeds (task.seed, task.seed + 1, ...)
    and its fitness at that rung is their mean (a run that went non-finite counts 0), because one
    training seed rewards fragile losses: in `make demo` (seed 0) `(y - x) / y` scored 0.9275 at
    300 steps on the search's seed, then went non-finite on one test seed and reached 0.558 on the
    other.  CMA-ES samples train on task.seed only (its budget is already small).
    """

    steps: tuple[int, ...] = ()
    promote_fraction: float = 0.25
    cma_rung: int = -1
    seeds: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.steps, (str, bytes)) or not isinstance(self.steps, (list, tuple)):
            raise ConfigError(f"fidelity.steps must be a list of step counts, got {self.steps!r}")
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ConfigError("fidelity.steps must name at least one rung above task.steps")
        for i, n in enumerate(self.steps):
            _num(f"fidelity.steps[{i}]", n, integer=True)
            if n < 1 or (i and n <= self.steps[i - 1]):
                raise ConfigError(f"fidelity.steps must be increasing positive step counts, got {list(self.steps)}")
        _prob("fidelity.promote_fraction", self.promote_fraction)
        if self.promote_fraction <= 0:
            raise ConfigError(f"fidelity.promote_fraction must be > 0, got {self.promote_fraction!r}")
        _num("fidelity.cma_rung", self.cma_rung, integer=True)
        if not -1 <= self.cma_rung <= len(self.steps):
            raise ConfigError(f"fidelity.cma_rung must be -1 (the top rung) or in [0, {len(self.steps)}], "
                              f"got {self.cma_rung}")
        _num("fidelity.seeds", self.seeds, integer=True)
        if not 1 <= self.seeds <= MAX_RUNG_SEEDS:
            raise ConfigError(f"fidelity.seeds must be in [1, {MAX_RUNG_SEEDS}] (training seeds per promotion), "
                              f"got {self.seeds}")

    def rung_steps(self, rung: int) -> int | None:
        """Training steps of a rung >= 1 (None for rung 0, which is task.steps)."""
        return None if rung == 0 else self.steps[rung - 1]

    @property
    def cma(self) -> int:
        """The rung CMA-ES samples train at, -1 resolved."""
        return len(self.steps) if self.cma_rung == -1 else self.cma_rung


@dataclass(frozen=True)
class SearchConfig:
    """The whole search: seed, discovery and coefficient optimization."""

    seed: int = 0
    ga: GAConfig = field(default_factory=GAConfig)
    cma: CMAConfig = field(default_factory=CMAConfig)
    fidelity: FidelityConfig | None = None  # None: one budget, task.steps (the paper's search)

    def __post_init__(self) -> None:
        _num("seed", self.seed, integer=True)
        if not isinstance(self.ga, GAConfig):
            raise ConfigError("ga must be a GAConfig")
        if not isinstance(self.cma, CMAConfig):
            raise ConfigError("cma must be a CMAConfig")
        if self.fidelity is not None and not isinstance(self.fidelity, FidelityConfig):
            raise ConfigError("fidelity must be a FidelityConfig")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (TOML/JSON-able); inverse of `from_dict`."""
        ga = {f.name: getattr(self.ga, f.name) for f in fields(GAConfig)}
        ga["node_weights"] = dict(self.ga.node_weights)
        ga["seed_losses"] = list(self.ga.seed_losses)
        for name in STEADY_FIELDS:  # TOML has no null: a generational run stores what it stored before
            if ga[name] is None:
                del ga[name]
        if ga["mode"] == "generational":
            del ga["mode"]
        cma = {f.name: getattr(self.cma, f.name) for f in fields(CMAConfig)}
        cma["options"] = dict(self.cma.options)
        if cma["popsize"] is None:
            del cma["popsize"]  # TOML has no null
        out: dict[str, Any] = {"seed": self.seed, "ga": ga, "cma": cma}
        if self.fidelity is not None:  # absent otherwise: a run without rungs stores what it stored before
            out["fidelity"] = {"steps": list(self.fidelity.steps), "promote_fraction": self.fidelity.promote_fraction,
                               "cma_rung": self.fidelity.cma_rung}
            if self.fidelity.seeds != 1:  # absent at 1: configs stored before the setting stay as they were
                out["fidelity"]["seeds"] = self.fidelity.seeds
        return out

    @staticmethod
    def from_stored(data: Mapping[str, Any]) -> "SearchConfig":
        """A stored search config (a run's or a search state's), each setting added since at the value the
        search ran with before it existed: `ga.offspring` was the paper's rule."""
        return SearchConfig.from_dict(stored_search(data))

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> "SearchConfig":
        """Build from plain data; missing fields take the paper's defaults, unknown ones are errors."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"search config must be a table, got {type(data).__name__}")
        unknown = set(data) - {"seed", "ga", "cma", "fidelity"}
        if unknown:
            raise ConfigError(f"unknown search config field(s): {', '.join(sorted(unknown))}")
        parts: dict[str, Any] = {}
        for name, cls in (("ga", GAConfig), ("cma", CMAConfig), ("fidelity", FidelityConfig)):
            if name == "fidelity" and data.get(name) is None:
                continue
            sub = data.get(name, {})
            if not isinstance(sub, Mapping):
                raise ConfigError(f"{name} must be a table, got {type(sub).__name__}")
            known = {f.name for f in fields(cls)}
            bad = set(sub) - known
            if bad:
                raise ConfigError(f"unknown field(s) {', '.join(f'{name}.{b}' for b in sorted(bad))}")
            parts[name] = cls(**sub)
        return SearchConfig(seed=data.get("seed", 0), **parts)


def stored_search(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` (a stored [search] table) with `ga.offspring` filled in as `OFFSPRING_LEGACY` where it was
    written before the setting existed (a stored config always lists every GA field it had)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("ga"), Mapping) or "offspring" in data["ga"]:
        return dict(data) if isinstance(data, Mapping) else data
    return {**data, "ga": {**data["ga"], "offspring": OFFSPRING_LEGACY}}
