"""Training profiles decide the work by epochs and seed, never by the clock, so every machine trains the same model."""
import pytest

from pcb_pipeline.vision.profiles import PROFILES, resolve_profile
from pcb_pipeline.vision.train import parse_overrides


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_no_profile_stops_on_a_wall_clock_budget(name):
    params = resolve_profile(name)
    assert "time" not in params and isinstance(params["epochs"], int) and params["epochs"] >= 1


def test_demo_profile_is_seeded_and_deterministic():
    demo = resolve_profile("demo")
    assert demo["seed"] == 0 and demo["deterministic"] is True and demo["device"] == "cpu"


def test_a_user_may_still_set_a_time_budget():
    params = resolve_profile("demo", parse_overrides(["time=0.5", "epochs=40"]))
    assert params["time"] == 0.5 and params["epochs"] == 40


def test_overrides_are_typed_and_malformed_pairs_refused():
    assert parse_overrides(["epochs=40", "lr0=0.02", "cache=false", "name=x=y"]) == {
        "epochs": 40, "lr0": 0.02, "cache": False, "name": "x=y"}
    for bad in (["epochs"], ["=3"]):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_overrides(bad)
