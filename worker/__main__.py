"""`python -m worker SPEC.json --out RESULT.json` (console script `glo-worker`).

Exit codes (also in worker.spec):
  0   done -- every candidate has a result (ok, nonfinite or error) in RESULT.json
  65  bad spec -- the spec file is unreadable, malformed, or inconsistent with the data
  66  missing data -- no usable data file; stderr lists every place tried
  70  internal error -- anything else; one line on stderr
A candidate whose loss goes NaN/inf is a normal result (status "nonfinite", fitness 0), not an error.

TensorFlow is imported only after the spec validates and the data is found, so the two
cheap failures are reported in well under a second.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from worker.spec import EXIT_BAD_SPEC, EXIT_INTERNAL, EXIT_MISSING_DATA, EXIT_OK, SpecError, load_spec


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glo-worker", description="Train GLO candidate losses and write their fitness.")
    p.add_argument("spec", help="the job spec (JSON, see worker/spec.py)")
    p.add_argument("--out", required=True, help="result file, rewritten atomically after each candidate")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-candidate progress on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        spec = load_spec(args.spec)
        out = Path(args.out)
        if not out.parent.is_dir():
            print(f"glo-worker: internal error: result directory {out.parent} does not exist", file=sys.stderr)
            return EXIT_INTERNAL
        from worker.data import MissingDataError, load_task

        try:
            data = load_task(spec)
        except MissingDataError as exc:
            print(f"glo-worker: missing data: no usable {exc.task} data set. Places tried:", file=sys.stderr)
            for place in exc.tried:
                print(f"  - {place}", file=sys.stderr)
            return EXIT_MISSING_DATA

        from worker.train import run_spec  # imports TensorFlow

        log = None if args.quiet else (lambda line: print(f"glo-worker: {line}", file=sys.stderr, flush=True))
        run_spec(spec, data, out, log=log)
        return EXIT_OK
    except SpecError as exc:
        print(f"glo-worker: bad spec: {exc}", file=sys.stderr)
        return EXIT_BAD_SPEC
    except KeyboardInterrupt:
        print("glo-worker: interrupted", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:  # the documented catch-all: one line, exit 70
        msg = " ".join(str(exc).split())[:500]
        print(f"glo-worker: internal error: {type(exc).__name__}: {msg}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
