"""Running a search: the steps between the search's ask/tell and a backend, and the one writer of SQLite.

* `scheduler` -- the asynchronous loop: asks the search for candidates, looks each up in the fitness
  cache, plans jobs, submits them through a `Backend`, stores every event, tells results back.
* `cachekey` -- the key a training is cached under (canonical tree + what the training depends on).
* `searchlog` -- when the search's state is saved whole, the ask/tell entries logged between, their replay.
* `lock` -- a run's side files, its exclusive lock (one scheduler per run) and detached start.
* `runner` -- `glo run`'s glue: take the lock, open the database, build or resume the scheduler.

Nothing here knows a cluster: the backends (orchestrator/backends/) do.
"""
