"""The worker's spec/result wire format: validation names the field, round trips are exact."""

import json

import pytest

from worker.lossexpr import named_loss
from worker.spec import CandidateResult, CandidateSpec, SpecError, WorkerSpec, read_results, write_results


def _spec(**over) -> dict:
    spec = WorkerSpec(task="mnist", candidates=(CandidateSpec("a", named_loss("baikal_cma")),))
    data = spec.to_json()
    data.update(over)
    return data


def test_round_trip_and_hash_stable():
    data = _spec(class_reduction="sum", steps=30)
    spec = WorkerSpec.from_json(json.loads(json.dumps(data)))
    assert spec.to_json() == data
    assert spec.candidates[0].tree == named_loss("baikal_cma")
    assert spec.spec_hash() == WorkerSpec.from_json(data).spec_hash()
    assert spec.spec_hash() != WorkerSpec.from_json(_spec(class_reduction="mean", steps=30)).spec_hash()


@pytest.mark.parametrize(
    "override, field",
    [
        ({"class_reduction": "max"}, "class_reduction"),
        ({"task": "imagenet"}, "task"),
        ({"steps": 0}, "steps"),
        ({"epsilon": 2.0}, "epsilon"),
        ({"glo_worker_spec": 99}, "glo_worker_spec"),
        ({"stepz": 3}, "stepz"),
        ({"candidates": []}, "candidates"),
    ],
)
def test_bad_fields_are_named(override, field):
    with pytest.raises(SpecError, match=field):
        WorkerSpec.from_json(_spec(**override))


def test_result_file_round_trip(tmp_path):
    results = [CandidateResult("a", "ok", 0.9, validation_accuracy=0.9), CandidateResult("b", "nonfinite", 0.0,
                                                                                         nonfinite_step=7)]
    write_results(tmp_path / "r.json", "h", results)
    spec_hash, back = read_results(tmp_path / "r.json")
    assert spec_hash == "h" and [r.to_json() for r in back] == [r.to_json() for r in results]
    (tmp_path / "bad.json").write_text('{"glo_worker_result": 1, "spec_hash": "h", "results": [{"fitness": 1}]}')
    with pytest.raises(ValueError, match="bad.json"):
        read_results(tmp_path / "bad.json")
