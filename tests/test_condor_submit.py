"""Submit descriptions (checked by the real htcondor2 parser) and condor_submit's real output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import htcondor2
import pytest

from condor.submit import (
    CondorJobSettings,
    SubmitDescriptionError,
    SubmitOutputError,
    parse_submit_output,
    quote_arguments,
    quote_environment,
    render_submit,
)
from tests.condor_pool import Pool

GOLDEN = Path(__file__).parent / "golden" / "condor"
PY = ("/opt/glo/venv/bin/python", "-m", "worker")


def parsed(text: str) -> dict[str, str]:
    """The commands htcondor2 reads from a submit description (custom attributes come back as MY.X)."""
    sub = htcondor2.Submit(text)
    return {k: sub[k] for k in sub.keys()}


def test_quoting_matches_the_condor_submit_manual() -> None:
    # The manual's own examples of the new syntax, argv -> text.
    assert quote_arguments(["3", "simple", "arguments"]) == '"3 simple arguments"'
    assert quote_arguments(["one", "two with spaces", "3"]) == "\"one 'two with spaces' 3\""
    assert quote_arguments(["one", '"two"', "spacey 'quoted' argument"]) == \
        "\"one \"\"two\"\" 'spacey ''quoted'' argument'\""
    assert quote_arguments(["", "a\tb"]) == "\"'' 'a\tb'\""
    assert quote_environment({"B": "two words", "A": "1"}) == "\"A=1 B='two words'\""


def test_rendered_job_is_read_back_by_htcondor2() -> None:
    settings = CondorJobSettings(request_gpus=1, request_memory="6GB", requirements='(CUDACapability >= 7.0)',
                                 environment={"GLO_DATA_DIR": "/data/glo sets"}, max_runtime_s=3600,
                                 extra={"accounting_group": "group_ml.alice", "+WantGPULab": "true"})
    text = render_submit(PY, settings, attributes={"GloRunId": 'run "7"', "GloJobId": 42}, batch_name="glo-run7")
    cmds = parsed(text)
    assert cmds["executable"] == "/opt/glo/venv/bin/python"
    assert cmds["arguments"] == '"-m worker spec.json --out result.json"'
    assert cmds["transfer_input_files"] == "spec.json" and cmds["transfer_output_files"] == "result.json"
    assert cmds["should_transfer_files"] == "YES" and cmds["transfer_executable"] == "false"
    assert cmds["log"] == "job.log" and cmds["request_gpus"] == "1" and cmds["request_memory"] == "6GB"
    assert cmds["environment"] == "\"GLO_DATA_DIR='/data/glo sets' PYTHONUNBUFFERED=1\""
    assert cmds["requirements"] == "(CUDACapability >= 7.0)"
    assert cmds["allowed_execute_duration"] == "3600"
    assert cmds["MY.GloRunId"] == '"run \\"7\\""' and cmds["MY.GloJobId"] == "42"
    assert cmds["accounting_group"] == "group_ml.alice" and cmds["MY.WantGPULab"] == "true"
    assert cmds["batch_name"] == "glo-run7"
    assert text.rstrip().endswith("queue") and text.count("queue") == 1


def test_it_uses_the_commands_of_a_job_that_ran_on_a_real_pool() -> None:
    golden = parsed((GOLDEN / "success.sub").read_text())
    ours = parsed(render_submit(PY, CondorJobSettings()))
    for key in ("universe", "should_transfer_files", "when_to_transfer_output", "transfer_input_files",
                "transfer_output_files", "log", "output", "error", "request_cpus", "request_memory",
                "request_disk", "request_gpus"):
        assert key in golden and key in ours
    assert ours["universe"] == golden["universe"] == "vanilla"
    assert ours["when_to_transfer_output"] == golden["when_to_transfer_output"] == "ON_EXIT"


@pytest.mark.parametrize("settings, needle", [
    (CondorJobSettings(requirements="true\nqueue 100"), "requirements must be a single line"),
    (CondorJobSettings(environment={"X": "1\nexecutable = /bin/rm"}), "environment.X must be a single line"),
    (CondorJobSettings(environment={"BAD NAME": "1"}), "not a variable name"),
    (CondorJobSettings(extra={"executable": "/bin/sh"}), "set by GLO itself"),
    (CondorJobSettings(extra={"queue 5; x": "1"}), "not a submit command name"),
    (CondorJobSettings(request_memory="lots"), "request_memory must be a size"),
    (CondorJobSettings(request_gpus=-1), "request_gpus must be a whole number"),
    (CondorJobSettings(max_runtime_s=0), "max_runtime_s must be a positive"),
])
def test_bad_settings_name_the_problem(settings: CondorJobSettings, needle: str) -> None:
    with pytest.raises(SubmitDescriptionError, match=needle):
        render_submit(PY, settings)


def test_bad_command_and_attributes() -> None:
    with pytest.raises(SubmitDescriptionError, match="worker_command is empty"):
        render_submit((), CondorJobSettings())
    with pytest.raises(SubmitDescriptionError, match="white space"):
        render_submit(("/opt/my env/python", "-m", "worker"), CondorJobSettings())
    with pytest.raises(SubmitDescriptionError, match="single line"):
        render_submit((*PY, "a\nqueue"), CondorJobSettings())
    with pytest.raises(SubmitDescriptionError, match="not a ClassAd attribute name"):
        render_submit(PY, CondorJobSettings(), attributes={"Glo Run": "x"})
    with pytest.raises(SubmitDescriptionError, match="batch_name"):
        render_submit(PY, CondorJobSettings(), batch_name="two words")


def test_submit_output_from_a_real_pool() -> None:
    terse = parse_submit_output((GOLDEN / "fail.condor_submit_terse.stdout.txt").read_text())
    assert (terse.cluster, terse.job_ids) == (2, ["2.0"])
    multi = parse_submit_output((GOLDEN / "multi.condor_submit_terse.stdout.txt").read_text())
    assert multi.job_ids == [f"5.{p}" for p in range(6)]
    plain = parse_submit_output((GOLDEN / "success.condor_submit.stdout.txt").read_text())
    assert (plain.cluster, plain.job_ids) == (1, ["1.0"])
    with pytest.raises(SubmitOutputError, match="did not report a cluster.*Submitting job"):
        parse_submit_output((GOLDEN / "error.bad_submit.stdout.txt").read_text())
    with pytest.raises(SubmitOutputError, match=r"\(nothing\)"):
        parse_submit_output("")


@pytest.mark.condor
def test_live_pool_runs_a_rendered_job_and_keeps_every_argument(condor_pool: Pool) -> None:
    """A rendered job on a real pool: argv with spaces and both quote kinds arrives intact, the
    spec goes in and the result comes back by file transfer."""
    tricky = "it's a \"quoted\" arg"
    code = ("import json, sys; spec = json.load(open(sys.argv[-3])); "
            "json.dump({'argv': sys.argv[1:], 'spec': spec}, open(sys.argv[-1], 'w'))")
    job_dir = condor_pool.jobs_dir("submit")
    (job_dir / "spec.json").write_text(json.dumps({"hello": "pool"}))
    text = render_submit((condor_pool.job_python(), "-c", code, tricky),
                         CondorJobSettings(request_gpus=0, request_memory="128MB", request_disk="10MB"),
                         attributes={"GloTest": "submit"})
    (job_dir / "job.sub").write_text(text)
    done = subprocess.run(["condor_submit", "-terse", "job.sub"], cwd=job_dir, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    cluster = parse_submit_output(done.stdout)
    try:
        waited = subprocess.run(["condor_wait", "-wait", "600", str(job_dir / "job.log"), str(cluster.cluster)],
                                capture_output=True, text=True, timeout=660)
        assert waited.returncode == 0, waited.stdout + waited.stderr
    finally:
        subprocess.run(["condor_rm", str(cluster.cluster)], capture_output=True, timeout=60)
    result = json.loads((job_dir / "result.json").read_text())
    assert result == {"argv": [tricky, "spec.json", "--out", "result.json"], "spec": {"hello": "pool"}}
