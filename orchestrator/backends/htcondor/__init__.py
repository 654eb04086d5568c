"""The HTCondor backends: one core, two transports.

* `core` -- jobs in a pool, followed through the run's event log; submission, hold/retry policy,
  re-adoption after a restart.  Shared by `backend.kind = "condor"` and `"ssh"`.
* `transport` -- the small synchronous surface the core needs from a submit host.
* `bindings` -- that surface through the htcondor2 Python bindings, on the submit host.
* `ssh` -- the same surface over SSH with the command-line tools; `sshconn` is its connection (paramiko),
  the one choke point for remote commands, whose errors carry the command, exit code, stdout and stderr.

Submit descriptions and event-log parsing themselves live in the top-level `condor/` package, which
imports nothing of the orchestrator.
"""
