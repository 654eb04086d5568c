"""`python -m worker SPEC.json --out RESULT.json` (console script `glo-worker`).

Exit codes (also in worker.spec):
  0   done -- every candidate has a result (ok, nonfinite, collapsed or error) in RESULT.json
  65  bad spec -- the spec file is unreadable, malformed, or inconsistent with the data
  66  missing data -- no usable data file; stderr lists every place tried
  70  internal error -- anything else; one line on stderr
  75  bad node -- this machine cannot train: TensorFlow does not import, no GPU although one was
      required ($GLO_REQUIRE_GPU=1, set by the cluster backends when a job requests GPUs), or out of
      memory.  A scheduler retries such a job on another machine.
A candidate whose loss goes NaN/inf is a normal result (status "nonfinite", fitness 0), not an error; so is
one whose training froze with every prediction one class and the rest clipped away (status "collapsed",
fitness 0, the reason in extra["collapse"]; worker/collapse.py).
Whenever it can, the worker also records a failing exit code in RESULT.json (`worker_exit`), because on
a cluster the result file is what reliably comes back.

TensorFlow is imported only after the spec validates and the data is found, so the two
cheap failures are reported in well under a second.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from worker.spec import (
    EXIT_BAD_NODE,
    EXIT_BAD_SPEC,
    EXIT_INTERNAL,
    EXIT_MISSING_DATA,
    EXIT_OK,
    BadNodeError,
    SpecError,
    load_spec,
    record_exit,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glo-worker", description="Train GLO candidate losses and write their fitness.")
    p.add_argument("spec", help="the job spec (JSON, see worker/spec.py)")
    p.add_argument("--out", required=True, help="result file, rewritten atomically after each candidate")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-candidate progress on stderr")
    return p


def _fail(out: Path, spec_hash: str, code: int, message: str) -> int:
    """Say why on stderr, and in the result file when its directory exists."""
    print(f"glo-worker: {message}", file=sys.stderr)
    if out.parent.is_dir():
        try:
            record_exit(out, spec_hash, code, message)
        except OSError:
            pass
    return code


def _check_gpu(device: str) -> None:
    if os.environ.get("GLO_REQUIRE_GPU") == "1" and device == "CPU":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")
        raise BadNodeError(f"no GPU visible to TensorFlow although the job requires one "
                           f"(CUDA_VISIBLE_DEVICES={visible})")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from worker import tf_env  # noqa: F401  -- TensorFlow's environment, before anything imports it

    out = Path(args.out)
    spec_hash = ""
    try:
        spec = load_spec(args.spec)
        spec_hash = spec.spec_hash()
        if not out.parent.is_dir():
            print(f"glo-worker: internal error: result directory {out.parent} does not exist", file=sys.stderr)
            return EXIT_INTERNAL
        from worker.data import MissingDataError, load_task

        try:
            data = load_task(spec)
        except MissingDataError as exc:
            places = "".join(f"\n  - {place}" for place in exc.tried)
            return _fail(out, spec_hash, EXIT_MISSING_DATA,
                         f"missing data: no usable {exc.task} data set. Places tried:{places}")
        try:
            from worker.train import device_name, run_spec  # imports TensorFlow
        except ImportError as exc:
            raise BadNodeError(f"TensorFlow does not import on this machine: {exc}") from exc
        _check_gpu(device_name())

        log = None if args.quiet else (lambda line: print(f"glo-worker: {line}", file=sys.stderr, flush=True))
        run_spec(spec, data, out, log=log)
        return EXIT_OK
    except SpecError as exc:
        return _fail(out, spec_hash, EXIT_BAD_SPEC, f"bad spec: {exc}")
    except BadNodeError as exc:
        return _fail(out, spec_hash, EXIT_BAD_NODE, f"bad node: {exc}")
    except KeyboardInterrupt:
        return _fail(out, spec_hash, EXIT_INTERNAL, "interrupted")
    except Exception as exc:  # the documented catch-all: one line, exit 70
        msg = " ".join(str(exc).split())[:500]
        return _fail(out, spec_hash, EXIT_INTERNAL, f"internal error: {type(exc).__name__}: {msg}")


if __name__ == "__main__":
    sys.exit(main())
