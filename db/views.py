"""Read-only views for people who inspect a run with the sqlite3 shell.

    sqlite3 glo.db 'select * from leaderboard limit 10'
    sqlite3 glo.db 'select state, count(*) from job_states group by state'
"""

from __future__ import annotations

VIEWS: dict[str, str] = {
    # Every candidate with a measured fitness, best first, with what it was measured on.
    "leaderboard": """
CREATE VIEW leaderboard AS
SELECT c.run_id            AS run_id,
       c.uid               AS candidate_id,
       c.infix             AS formula,
       c.fitness           AS fitness,
       e.task              AS task,
       e.steps             AS steps,
       e.budget_json       AS budget,
       c.status            AS status,
       c.phase             AS phase,
       c.generation        AS generation,
       c.origin            AS origin
FROM candidates c JOIN evaluations e ON e.id = c.evaluation_id
WHERE c.status IN ('evaluated', 'cached') AND c.fitness IS NOT NULL
ORDER BY c.fitness DESC, c.uid
""",
    # Every job with its state, the candidates it carries and how long it has taken.
    "job_states": """
CREATE VIEW job_states AS
SELECT j.id AS job_id, j.run_id AS run_id, j.backend AS backend, j.backend_job_id AS backend_job_id,
       j.state AS state, j.attempts AS attempts, j.last_error AS last_error, j.hold_reason AS hold_reason,
       j.hold_code AS hold_code, j.hold_subcode AS hold_subcode, j.host AS host, j.evictions AS evictions,
       j.releases AS releases, j.bad_nodes_json AS bad_nodes,
       (SELECT count(*) FROM job_candidates jc WHERE jc.job_id = j.id) AS candidates,
       datetime(j.created_at, 'unixepoch') AS created,
       datetime(j.updated_at, 'unixepoch') AS updated,
       CASE WHEN j.finished_at IS NOT NULL AND j.submitted_at IS NOT NULL
            THEN round(j.finished_at - j.submitted_at, 1) END AS seconds
FROM jobs j
ORDER BY j.id
""",
    # One line per run: what `glo runs` shows.
    "run_summary": """
CREATE VIEW run_summary AS
SELECT r.id AS run_id, r.name AS name, r.task AS task, r.status AS status, r.phase AS phase,
       r.generation AS generation,
       (SELECT count(*) FROM candidates c WHERE c.run_id = r.id AND c.status = 'evaluated') AS evaluated,
       (SELECT count(*) FROM candidates c WHERE c.run_id = r.id AND c.status = 'cached') AS cached,
       (SELECT count(*) FROM candidates c WHERE c.run_id = r.id AND c.status = 'failed') AS failed,
       (SELECT max(c.fitness) FROM candidates c WHERE c.run_id = r.id
          AND c.status IN ('evaluated', 'cached')) AS best_fitness,
       datetime(r.created_at, 'unixepoch') AS created
FROM runs r
ORDER BY r.created_at
""",
}
