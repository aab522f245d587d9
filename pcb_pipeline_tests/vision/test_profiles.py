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


@pytest.mark.parametrize("requested,gpus,batch,device,out_batch", [
    (0, 1, 32, 0, 32),                 # one GPU: as requested
    (0, 4, 32, "0,1,2,3", 32),         # a GPU_NV_M node: all four (DDP)
    (0, 4, 30, "0,1,2,3", 28),         # DDP splits the batch evenly: rounded down to a multiple of 4
    (0, 8, 4, "0,1,2,3,4,5,6,7", 8),   # never less than one image per GPU
    ("0,1", 4, 32, "0,1", 32),         # an explicit list is kept
    ("cpu", 4, 8, "cpu", 8),           # the CPU demo stays on the CPU
    (0, 0, 32, "cpu", 32),             # a GPU profile without a GPU: the CPU, and it says so
    (0, 4, -1, "0,1,2,3", -1),         # ultralytics' auto-batch is left as asked
])
def test_training_device_uses_every_gpu_of_the_node(requested, gpus, batch, device, out_batch):
    from pcb_pipeline.vision.profiles import training_device

    got, got_batch, why = training_device(requested, gpus, batch)
    assert (got, got_batch) == (device, out_batch)
    assert ("no CUDA device" in why) == (gpus == 0 and requested != "cpu" and "," not in str(requested))


def test_per_epoch_metrics_come_from_results_csv_under_ddp(tmp_path):
    from pcb_pipeline.vision.train import log_results_csv

    csv_path = tmp_path / "results.csv"
    csv_path.write_text("epoch,train/box_loss,metrics/mAP50(B),lr/pg0\n1,2.5,0.1,0.01\n2,2.0,0.4,0.009\n")
    logged = []

    class FakeMlflow:
        @staticmethod
        def log_metrics(metrics, step):
            logged.append((step, metrics))

    assert log_results_csv(FakeMlflow, csv_path) == 2
    assert logged[1] == (2, {"train/box_loss": 2.0, "metrics/mAP50_B": 0.4, "lr/pg0": 0.009})
    assert log_results_csv(FakeMlflow, tmp_path / "missing.csv") == 0
