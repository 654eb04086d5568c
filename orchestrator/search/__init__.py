"""The search: GA discovery of loss trees, then CMA-ES on their coefficients, as pure ask/tell.

No I/O and no TensorFlow: the scheduler asks for candidates, trains them elsewhere and tells
the results back; the whole state exports to plain JSON data.
"""

from orchestrator.search.candidate import ORIGINS, AskTell, Candidate
from orchestrator.search.cma_phase import CMAPhase, StateError
from orchestrator.search.config import CMAConfig, ConfigError, GAConfig, SearchConfig
from orchestrator.search.modes import new_search, search_from_state
from orchestrator.search.search import AlreadyToldError, Resolved, Search, UnknownCandidateError, default_key_fn
from orchestrator.search.steady import SteadyStateSearch

__all__ = [
    "ORIGINS", "AlreadyToldError", "AskTell", "CMAConfig", "CMAPhase", "Candidate", "ConfigError", "GAConfig",
    "Resolved", "Search", "SearchConfig", "StateError", "SteadyStateSearch", "UnknownCandidateError", "default_key_fn",
    "new_search", "search_from_state",
]
