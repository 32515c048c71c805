"""`benchmarks/fingerprint.py`, the before/after proof of a refactor: training on CPU is deterministic to the bit, so
two runs give equal fingerprints, and any changed logged value, parameter or file is named."""

import importlib.util
import json

from helpers import ROOT


def load_fingerprint():
    spec = importlib.util.spec_from_file_location("fingerprint", ROOT / "benchmarks" / "fingerprint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_runs_are_identical_and_a_changed_value_is_named(tmp_path, capsys):
    fingerprint = load_fingerprint()
    settings = ["--settings", "default", "completions_table", "--workdir", str(tmp_path / "work")]
    for name in ("a", "b"):
        assert fingerprint.main([*settings, "--output", str(tmp_path / f"{name}.json")]) == 0
    a, b = (str(tmp_path / f"{name}.json") for name in ("a", "b"))
    assert fingerprint.main(["--compare", a, b]) == 0
    assert "identical: 2 settings" in capsys.readouterr().out

    changed = json.loads((tmp_path / "b.json").read_text())
    assert {"README.md", "completions/completions_00001.parquet"} <= set(changed["completions_table"]["files"])
    changed["default"]["logs"][0]["loss"] += 1e-12
    name = next(iter(changed["completions_table"]["student"]))
    changed["completions_table"]["student"][name] = "0" * 16
    (tmp_path / "b.json").write_text(json.dumps(changed))
    assert fingerprint.main(["--compare", a, b]) == 1
    out = capsys.readouterr().out
    assert "completions_table: student differ" in out and "default: logs differ" in out
