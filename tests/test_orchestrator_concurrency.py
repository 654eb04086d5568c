"""Acceptance: 20 threads running `glo status` while a run writes -- never "database is locked",
every answer internally consistent and monotone over time."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from db.queries import status
from db.session import open_db
from tests.orch_helpers import glo, glo_env, glo_popen, scalar, write_config

THREADS = 20


def test_twenty_status_readers_while_a_run_writes(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", population=20, generations=3, cma_iterations=3, per_job=1)
    db = tmp_path / "w.db"
    proc = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "busy", env=glo_env(sleep=0.01))
    while scalar(db, "select count(*) from runs") == 0:
        assert proc.poll() is None
        time.sleep(0.01)
    errors: list[str] = []
    answers = [0] * THREADS

    def reader(i: int) -> None:
        last_settled, last_best = -1, -1.0
        handle = open_db(db)  # like one `glo status` process: its own connection
        try:
            while proc.poll() is None:
                try:
                    st = status(handle, "busy")
                except Exception as exc:  # noqa: BLE001 -- any error is a failure of the acceptance
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                e = st.evaluations
                settled = e["done"] + e["cached"] + e["failed"] + e["resolved"]
                if settled < last_settled:
                    errors.append(f"went backwards: {settled} < {last_settled}")
                best = st.best["fitness"] if st.best else -1.0
                if best < last_best:
                    errors.append(f"best went backwards: {best} < {last_best}")
                if min(e.values()) < 0:
                    errors.append(f"negative count {e}")
                last_settled, last_best = settled, best
                answers[i] += 1
        finally:
            handle.dispose()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    # and real `glo status --json` processes at the same time
    cli_answers = 0
    while proc.poll() is None:
        r = glo("status", "busy", "--db", str(db), "--json")
        if r.returncode != 0:
            errors.append(r.stderr)
        else:
            json.loads(r.stdout)
            cli_answers += 1
    for t in threads:
        t.join()
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert not errors, errors[:5]
    assert "locked" not in err
    final = status(open_db(db), "busy")
    assert final.status == "finished"
    print(f"{sum(answers)} in-process status answers from {THREADS} threads + {cli_answers} CLI answers, "
          f"0 errors, {final.evaluations['done']} evaluations written meanwhile")
    assert min(answers) > 0
