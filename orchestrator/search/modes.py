"""Which search a config's `ga.mode` means: the one place the scheduler (and benches) build or reload one."""

from __future__ import annotations

from typing import Any

from orchestrator.search.config import SearchConfig
from orchestrator.search.search import KeyFn, ScreenFn, Search
from orchestrator.search.steady import SteadyStateSearch


def new_search(config: SearchConfig, key_fn: KeyFn | None = None, screen: ScreenFn | None = None,
               drop_scale: bool = False) -> Search:
    """A fresh search: `Search` (generational, the paper's GA) or `SteadyStateSearch`.  `drop_scale`: the
    run trains calibrated losses (CMA-ES then tunes no overall scale, `Search`)."""
    cls = SteadyStateSearch if config.ga.mode == "steady-state" else Search
    return cls(config, key_fn=key_fn, screen=screen, drop_scale=drop_scale)


def search_from_state(state: dict[str, Any], key_fn: KeyFn | None = None, reissue_outstanding: bool = False,
                      screen: ScreenFn | None = None, drop_scale: bool = False) -> Search:
    """A search rebuilt from `export_state()` data (a steady-state one carries its own section)."""
    cls = SteadyStateSearch if "steady" in state else Search
    return cls.import_state(state, key_fn=key_fn, reissue_outstanding=reissue_outstanding, screen=screen,
                            drop_scale=drop_scale)
