"""`glo`: the command line.  A thin layer: each command parses arguments, calls the library, prints.

Sub-command groups live in their own modules and are registered here.
"""

from __future__ import annotations

import importlib

import click

#: Commands whose module is imported alone when that command runs: `glo status` then imports neither numpy, the
#: scheduler nor SQLAlchemy's ORM.  Any other name, --help, or reading `main.commands` registers every command.
_LAZY = {"status": ("orchestrator.cli.runs", "status_cmd"), "runs": ("orchestrator.cli.runs", "runs_cmd"),
         "best": ("orchestrator.cli.runs", "best_cmd"), "show": ("orchestrator.cli.runs", "show_cmd"),
         "stop": ("orchestrator.cli.runs", "stop_cmd"), "run": ("orchestrator.cli.runs", "run_cmd"),
         "loss": ("orchestrator.cli.loss", "loss")}


class _LazyGroup(click.Group):
    _all_registered = False

    @property
    def commands(self) -> dict[str, click.Command]:  # type: ignore[override]
        if not self._all_registered:
            self._all_registered = True  # first: _register() adds its commands through this property
            _register()
        return self._commands

    @commands.setter
    def commands(self, value: dict[str, click.Command]) -> None:
        self._commands = value

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if not self._all_registered and cmd_name in _LAZY:
            module, attr = _LAZY[cmd_name]
            command = getattr(importlib.import_module(module), attr, None)
            if isinstance(command, click.Command) and command.name == cmd_name:
                return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="glo")
def main() -> None:
    """GLO: discover loss functions by evolution, train them on an HTCondor pool."""


def _register() -> None:
    from orchestrator.cli.condor import condor
    from orchestrator.cli.evaluate import evaluate_cmd, experiment_cmd
    from orchestrator.cli.loss import loss
    from orchestrator.cli.report import report_cmd
    from orchestrator.cli.runs import COMMANDS
    from orchestrator.dashboard.cli import dashboard

    main.add_command(loss)
    main.add_command(condor)
    main.add_command(report_cmd)
    main.add_command(evaluate_cmd)
    main.add_command(experiment_cmd)
    for command in COMMANDS:
        main.add_command(command)
    main.add_command(dashboard)
