"""`python -m orchestrator ARGS` is `glo ARGS` (what `glo run --detach` starts in the background)."""

from orchestrator.cli import main

if __name__ == "__main__":
    main(prog_name="glo")
