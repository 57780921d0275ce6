"""The checks registry and ``python -m checks``: the quick tier of every registered statement holds."""

import json

import numpy as np
import pytest

import checks
from checks.__main__ import main
from checks.registry import REGISTRY, Check, CheckConfig, CheckResult, run_check


@pytest.mark.parametrize("check_id", sorted(REGISTRY))
def test_quick_tier_has_no_violation(check_id):
    results = run_check(REGISTRY[check_id], "quick")
    assert len(results) > 0
    bad = [r.config for r in results if not r.holds]
    assert not bad, f"{check_id} violated on {bad[:3]}"


def test_cli_writes_json_and_markdown(tmp_path):
    rc = main(["--quick", "--only", "S1", "S7", "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    assert rc == 0
    payload = json.loads((tmp_path / "r.json").read_text())
    assert {r["statement"] for r in payload["summary"]} == {"S1", "S7"}
    assert all(r["violations"] == 0 for r in payload["summary"])
    assert "| S1 |" in (tmp_path / "r.md").read_text()


def test_a_violation_is_reported_and_fails_the_run(monkeypatch, capsys):
    def wrong(cfg, rng):  # a claim that is false on purpose
        return CheckResult("S0", cfg, 2.0, 1.0, False, -1.0)

    monkeypatch.setitem(REGISTRY, "S0", Check("S0", "a false claim", "deterministic", wrong,
                                              lambda tier: [CheckConfig()]))
    assert main(["--quick", "--only", "S0"]) == 1
    assert "VIOLATED: S0" in capsys.readouterr().err


def test_config_key_is_stable_and_seeds_differ():
    a, b = CheckConfig(m=8), CheckConfig(m=8)
    assert a.key() == b.key() and CheckConfig(m=9).key() != a.key()
    r1 = run_check(REGISTRY["S1"], "quick")[0]
    r2 = run_check(REGISTRY["S1"], "quick")[0]
    assert r1.measured == r2.measured  # seeded by the configuration
    assert np.isfinite(checks.summarise({"S1": [r1]})[0]["worst_margin"])


def test_unknown_tier_is_refused():
    with pytest.raises(ValueError, match="tier"):
        run_check(REGISTRY["S1"], "medium")
