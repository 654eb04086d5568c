"""`glo`: the command line.  A thin layer: each command parses arguments, calls the library, prints.

Sub-command groups live in their own modules and are registered here.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="glo")
def main() -> None:
    """GLO: discover loss functions by evolution, train them on an HTCondor pool."""


def _register() -> None:
    from orchestrator.cli_condor import condor
    from orchestrator.cli_evaluate import evaluate_cmd, experiment_cmd
    from orchestrator.cli_loss import loss
    from orchestrator.cli_report import report_cmd
    from orchestrator.cli_runs import COMMANDS
    from orchestrator.dashboard.cli import dashboard

    main.add_command(loss)
    main.add_command(condor)
    main.add_command(report_cmd)
    main.add_command(evaluate_cmd)
    main.add_command(experiment_cmd)
    for command in COMMANDS:
        main.add_command(command)
    main.add_command(dashboard)


_register()
