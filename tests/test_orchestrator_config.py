"""Config: paper defaults, every bad key or value named, the stored snapshot rebuilds the same config."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import ConfigError, GloConfig, from_dict, load_config
from orchestrator.run.cachekey import eval_key

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_defaults_are_the_papers() -> None:
    c = from_dict({})
    assert (c.task.steps, c.task.batch_size, c.task.learning_rate) == (2000, 100, 0.01)
    assert c.search.ga.population_size == 80 and c.backend.kind == "local"


#: Every config the project ships: each command that takes a config must accept each of them (issue #18).
SHIPPED = sorted(p.name for p in CONFIGS.glob("*.toml"))


def test_the_shipped_configs_are_found() -> None:
    assert {"demo.toml", "mnist.toml", "mnist-small.toml", "cifar10.toml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_and_round_trip(name: str) -> None:
    c = load_config(CONFIGS / name)
    assert from_dict(c.to_dict()) == c
    assert list(c.to_dict()["search"]["ga"]["node_weights"])[:3] == ["log", "x", "y"]


@pytest.mark.parametrize("data, key", [
    ({"nope": {}}, "nope"),
    ({"run": {"sede": 1}}, "run.sede"),
    ({"run": {"seed": -1}}, "run.seed"),
    ({"task": {"name": "imagenet"}}, "task.name"),
    ({"task": {"learning_rate": 0}}, "task.learning_rate"),
    ({"task": {"epsilon": 2.0}}, "task.epsilon"),
    ({"task": {"class_reduction": "max"}}, "task.class_reduction"),
    ({"task": {"batch_size": True}}, "task.batch_size"),
    ({"search": {"seed": 3}}, "search.seed"),
    ({"search": {"ga": {"population_sz": 3}}}, "search.ga.population_sz"),
    ({"search": {"ga": {"elites": 100}}}, "search.ga.elites"),
    ({"search": {"cma": {"sigma0": -1}}}, "search.cma.sigma0"),
    ({"backend": {"kind": "pbs"}}, "backend.kind"),
    ({"backend": {"kind": "ssh"}}, "backend.ssh.host"),
    ({"backend": {"condor": {"request_memory": "lots"}}}, "backend.condor.request_memory"),
    ({"backend": {"condor": {"requirments": "x"}}}, "backend.condor.requirments"),
    ({"backend": {"ssh": {"host_key_policy": "auto"}}}, "backend.ssh.host_key_policy"),
    ({"backend": {"max_in_flight": 0}}, "backend.max_in_flight"),
    ({"backend": {"backup_copies": -1}}, "backend.backup_copies"),
    ({"backend": {"backup_after": 0}}, "backend.backup_after"),
    ({"backend": {"worker_command": []}}, "backend.worker_command"),
])
def test_bad_values_name_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(data)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[task]\nsteps = 'many'\n")
    with pytest.raises(ConfigError, match=r"c\.toml: task\.steps"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.toml")


def test_cache_key_covers_the_budget_not_the_data_path() -> None:
    base = from_dict({})
    k = eval_key("s1:x*log(y)", base.task)
    assert eval_key("s1:x*log(y)", from_dict({"task": {"data_path": "/elsewhere"}}).task) == k
    for change in ({"steps": 10}, {"batch_size": 7}, {"train_subset": 5}, {"seed": 1}, {"name": "cifar10"},
                   {"name": "fashion_mnist"}):
        assert eval_key("s1:x*log(y)", from_dict({"task": change}).task) != k
    assert isinstance(GloConfig().digest(), str)


def test_set_overrides_read_toml_values_and_plain_strings(tmp_path) -> None:
    """`glo run --set KEY=VALUE` (and make mnist BACKEND=ssh SSH_HOST=...): applied to the file's data
    before validation, so a kind's defaults follow the override and bad values are named as usual."""
    from orchestrator.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text('[task]\nsteps = 5\n')
    cfg = load_config(path, ["backend.kind=ssh", "backend.ssh.host=submit.example.org", "task.steps=7",
                             "backend.worker_command=/shared/glo/bin/python -m worker",
                             "backend.condor.release_hold_codes=[12, 13]", "backend.condor.check_gpu=false"])
    assert (cfg.backend.kind, cfg.backend.ssh.host, cfg.task.steps) == ("ssh", "submit.example.org", 7)
    assert cfg.backend.max_in_flight == 500  # the cluster default, since the kind changed before validation
    assert cfg.backend.worker_command == ("/shared/glo/bin/python", "-m", "worker")
    assert cfg.backend.condor.release_hold_codes == (12, 13) and cfg.backend.condor.check_gpu is False
    import pytest

    with pytest.raises(ConfigError, match="backend.condor.request_memory"):
        load_config(path, ["backend.condor.request_memory=lots"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(path, ["backend.kind"])


def test_a_device_class_keeps_fitnesses_of_different_gpus_apart() -> None:
    """Set, it is part of the cache key; unset, every key is what it was before the setting existed."""
    from orchestrator.config import from_dict
    from orchestrator.run.cachekey import eval_key

    plain = from_dict({"task": {"steps": 5}}).task
    a100 = from_dict({"task": {"steps": 5, "device_class": "A100"}}).task
    assert "device_class" not in plain.budget() and a100.budget()["device_class"] == "A100"
    assert eval_key("s1:x*log(y)", plain) != eval_key("s1:x*log(y)", a100)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_command_that_takes_a_config_accepts_every_shipped_config(name: str, tmp_path: Path) -> None:
    """`glo run` and `glo condor job` read a config with load_config, `glo experiment` with load_experiment,
    `glo evaluate --config` through evaluation_config; the [experiment] section of mnist-small.toml once
    made the last refuse it ("config.experiment: unknown key").  The evaluation is run for real (fake worker), at
    the config's top fidelity rung where it has one: mnist-small's evaluation at its rung of 1,000 steps once
    stopped `make mnist-small` after its whole search ("rungs must be above task.steps")."""
    import json
    import sys

    from orchestrator.experiments.pipeline import load_experiment
    from tests.orch_helpers import FAKE_WORKER, glo, glo_env

    path = CONFIGS / name
    run_cfg = load_config(path)
    if "[experiment]" in path.read_text():
        experiment = load_experiment(path)
        assert experiment.config == run_cfg
        if run_cfg.search.fidelity:  # #16: the search's longest training is the horizon its loss is judged at
            assert max(run_cfg.search.fidelity.steps) == experiment.steps
    else:
        with pytest.raises(ConfigError, match="an \\[experiment\\] table is needed"):
            load_experiment(path)
    worker = json.dumps([sys.executable, str(FAKE_WORKER)])
    steps = max(run_cfg.search.fidelity.steps) if run_cfg.search.fidelity else 3
    r = glo("evaluate", "ce", "--config", str(path), "--backend", "local", "--steps", str(steps), "--repeats", "1",
            "--set", f"backend.worker_command={worker}", "--set", f"backend.work_dir={tmp_path / 'work'}",
            "--db", str(tmp_path / "r.db"), "--run-id", "ev", "--json", env=glo_env())
    assert r.returncode == 0, r.stderr[-2000:]
    assert "unknown key" not in r.stderr
    assert json.loads(r.stdout)["run_id"] == "ev"


def test_experiment_seeds_name_the_evaluation_seeds_and_bad_ones_are_refused(tmp_path: Path) -> None:
    from orchestrator.experiments.pipeline import load_experiment

    base = '[task]\nsteps = 5\n[experiment]\nlosses = ["ce"]\nsteps = 10\n'
    ok = tmp_path / "ok.toml"
    ok.write_text(base + "seeds = [100, 101, 7]\n")
    exp = load_experiment(ok)
    assert exp.eval_seeds == [100, 101, 7] and exp.repeats == 3
    plain = tmp_path / "plain.toml"
    plain.write_text(base + "repeats = 2\n")
    assert load_experiment(plain).eval_seeds == [0, 1]
    for bad, match in (("seeds = []", "non-empty list"), ("seeds = [1, 1]", "distinct"), ("seeds = [-1]", ">= 0"),
                       ("seeds = [1, 2]\nrepeats = 3", "2 seeds but repeats = 3")):
        path = tmp_path / "bad.toml"
        path.write_text(base + bad + "\n")
        with pytest.raises(ConfigError, match=match):
            load_experiment(path)
