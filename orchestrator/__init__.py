"""GLO's orchestrator: everything on the submit side, in the order data flows.

config (`config`) -> search (`search/`: GA, CMA-ES, pure ask/tell) -> cache lookup and scheduling
(`run/`: scheduler, cache key, run lock, runner) -> backend submit (`backends/`: local, and `htcondor/`
over the bindings or SSH) -> the worker trains (top-level `worker/`, spec file in, result file out) ->
result -> db (top-level `db/`, written only from here) -> tell -> status (`cli/`, `dashboard/`), and the
evidence (`experiments/`: `glo experiment`'s pipeline, statistics, figures, reports).

Shared leaves: `errors` (the one error root), `procs` (the one choke point for local processes), `export`.
"""
