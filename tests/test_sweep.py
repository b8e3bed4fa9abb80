"""Sweeps: grids and run ids, the results store, resume after SIGKILL, failure isolation, backends, reports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import run_cli as cli

import bioplaus
from bioplaus.errors import ConfigError
from bioplaus.rules._registry import RULES
from bioplaus.runner import ray_session
from bioplaus.runner.sweep_backends import WORKER_DIED
from bioplaus.runner.sweep_grid import expand, grid_from_table, parse_grid_option, split_values

HERE = Path(__file__).resolve().parent
SMALL = {"task": "digits", "model": "mlp", "model_options": {"hidden": [16]}, "epochs": 2, "batch_size": 128}


def statuses(out: Path) -> dict[str, str]:
    return dict(zip(*bioplaus.results.load(out)[["run_id", "status"]].to_numpy().T, strict=True))


def alive(pid: int) -> bool:
    try:
        return "(zombie)" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def metric_files(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in (out / "runs").glob("*/metrics.csv")}


@pytest.fixture
def flaky(tmp_path):
    """The test-only rule ``flaky`` (tests/sweep_helpers.py) and its marker file; unregistered afterwards."""
    import sweep_helpers  # noqa: F401 - registers the rule

    marker = tmp_path / "fail"
    marker.touch()
    yield marker
    RULES._entries.pop("flaky")  # keep the registry of the other tests as it was
    sys.modules.pop("sweep_helpers")


# --- grids and run ids ---------------------------------------------------------------------------


def test_grid_values_are_split_outside_brackets_and_parsed_as_toml():
    assert split_values('1e-3, 1e-2,"a,b"') == ["1e-3", "1e-2", '"a,b"']
    assert parse_grid_option("model_options.hidden=[64],[128, 128]") == ("model_options.hidden", [[64], [128, 128]])
    assert parse_grid_option("lr=1e-3,0.1") == ("lr", [0.001, 0.1])
    assert parse_grid_option("optimizer=adam,sgd") == ("optimizer", ["adam", "sgd"])
    table = {"lr": [0.1, 0.2], "model_options": {"hidden": [[8], [16]]}, "rule_options.fa.scale": [1.0]}
    assert grid_from_table(table) == {
        "lr": [0.1, 0.2],
        "model_options.hidden": [[8], [16]],
        "rule_options.fa.scale": [1.0],
    }


def test_run_ids_are_stable_and_shared_runs_planned_once():
    runs = expand({**SMALL, "rules": ["bp", "fa"], "seeds": 2}, {"lr": [1e-3, 1e-2], "rule_options.fa.scale": [0.5, 1]})
    # bp does not depend on fa's scale: 2 lr × 2 seeds of bp, 2 lr × 2 scales × 2 seeds of fa
    assert len(runs) == 12 and len({r.run_id for r in runs}) == 12
    assert sum(r.rule == "bp" for r in runs) == 4
    fa = next(r for r in runs if r.rule == "fa")
    assert fa.config["rule_options"] == {"fa": {"scale": 0.5}} and "reference" not in fa.config
    # the id is a function of the resolved config: key order and defaults written out do not change it
    same = expand({"lr": 1e-3, "batch_size": 128, **SMALL, "seeds": [0], "rules": ["bp"], "optimizer": "adam"}, {})
    assert same[0].run_id == runs[0].run_id and len(runs[0].run_id) == 12
    other = expand({**SMALL, "rules": ["bp"], "seeds": [0], "lr": 2e-3}, {})
    assert other[0].run_id != runs[0].run_id


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grid", "lr"], "--grid expects key=v1,v2,... (e.g. --grid lr=1e-3,1e-2), got 'lr'"),
        (["--grid", "lr="], "--grid lr= lists no values"),
        (["--grid", "lr=1e-3,,1e-2"], "has an empty value"),
        (["--grid", "model_options.hidden=[1,2"], "unclosed bracket in grid values '[1,2'"),
        (["--grid", "lrr=0.1,0.2"], "grid cell lrr=0.1: unknown config key 'lrr' (did you mean 'lr'?)"),
        (["--grid", "lr=0.1,fast"], "grid cell lr=\"fast\": lr expects a number, got 'fast'"),
        (["--grid", "epochs=1,2.5"], "grid cell epochs=2.5: epochs expects an integer, got 2.5"),
        (["--grid", "model_options.hiden=[3]"], "model 'mlp' has no option 'hiden' (did you mean 'hidden'?)"),
        (["--grid", "model_options.hidden=3,4"], "model_options.hidden expects a list, got 3"),
        (["--grid", "rules=bp,fa"], "'rules' cannot be a grid key: every rule in 'rules' already runs"),
        (["--grid", "seeds=1,2"], "'seeds' cannot be a grid key"),
        (["--grid", "lr=0.1,0.1"], "grid key 'lr' lists the value 0.1 more than once"),
        (["--grid", "lr=0.1", "--grid", "lr=0.2"], "--grid lr is given twice"),
        (["--grid", "lr.x=1"], "grid cell lr.x=1: lr expects a number, got {'x': 1}"),
        (["--workers", "0"], "workers must be a positive integer, got 0"),
        (["--set", "grid.lr=0.1"], "grid.lr expects a non-empty list of values, e.g. lr = [1e-3, 1e-2], got 0.1"),
        (["--backend", "dask"], "argument --backend: invalid choice: 'dask'"),
    ],
)
def test_bad_grids_stop_before_anything_runs_with_exit_2(capsys, tmp_path, argv, message):
    config = tmp_path / "sweep.toml"
    config.write_text('task = "digits"\nrules = ["bp"]\nepochs = 1\n')
    code, out, err = cli(capsys, "sweep", str(config), "--out", str(tmp_path / "out"), "--quiet", *argv)
    assert code == 2 and out == ""
    assert err.startswith("bioplaus: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# --- the store, resume, reports ------------------------------------------------------------------


def test_sweep_in_a_process_pool_writes_the_store_and_resumes(capsys, tmp_path):
    out = tmp_path / "sweep"
    runs = bioplaus.sweep(
        SMALL, rules=["bp", "fa"], grid={"lr": [1e-3, 1e-2]}, seeds=2, out=out, workers=2, progress=False
    )
    assert len(runs) == 8 and runs["status"].eq("done").all() and runs["run_id"].is_unique
    assert {"run_id", "status", "message", "rule", "seed", "lr", "model_options.hidden", "test/accuracy"} <= set(runs)
    assert runs["model_options.hidden"].eq("[16]").all() and set(runs["lr"]) == {1e-3, 1e-2}
    geometry = {
        f"train/feedback_{kind}/layers.{layer}" for kind in ("angle", "norm_ratio") for layer in ("fc1", "readout")
    }
    assert set(runs.attrs["metrics"]) == {"train/loss", "train/accuracy", "test/loss", "test/accuracy"} | geometry
    for run_id in runs["run_id"]:
        folder = out / "runs" / run_id
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "metrics.csv", "status.json"]
        status = json.loads((folder / "status.json").read_text())
        assert status["status"] == "done" and status["environment"]["torch_threads"] == 1
        assert status["steps"] == 2 * 12 and 0 <= status["final"]["test/accuracy"] <= 1
    loaded = bioplaus.results.load(out)
    pd.testing.assert_frame_equal(loaded, runs)
    tidy = bioplaus.results.metrics(out)
    assert list(tidy.columns) == ["run_id", "rule", "seed", "epoch", "step", "split", "metric", "value"]
    # per run: test loss/accuracy at epochs 0-2, train loss/accuracy at 1-2; fa also its B–W geometry at 1-2
    assert len(tidy) == 8 * (2 + 2 * 4) + 4 * 2 * len(geometry)

    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*")}
    again = bioplaus.sweep(SMALL, rules=["bp", "fa"], grid={"lr": [1e-3, 1e-2]}, seeds=2, out=out, progress=False)
    pd.testing.assert_frame_equal(again, runs)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*")} == before  # nothing ran or was rewritten

    (out / "index.sqlite").write_bytes(b"not a database")  # a lost or damaged index is rebuilt from the runs
    pd.testing.assert_frame_equal(
        bioplaus.results.load(out).sort_values("run_id", ignore_index=True),
        runs.sort_values("run_id", ignore_index=True),
        check_like=True,  # runs with other metrics (fa's B–W geometry) may come first in the rebuild
    )

    report = bioplaus.results.report(out)
    summary = report.summary
    assert list(summary.columns) == ["lr", "rule", "metric", "mean", "sd", "n"]
    acc = summary[summary["metric"] == "test/accuracy"]
    assert len(acc) == 4 and acc["n"].eq(2).all()
    assert sorted(report.figures) == ["curves-lr=0.001", "curves-lr=0.01", "vs-lr"]
    code, text, _ = cli(capsys, "report", str(out))
    assert code == 0 and "| lr | rule | test/accuracy |" in text and "2/2 done" in text
    assert (out / "summary.csv").stat().st_size and (out / "figures" / "vs-lr.png").stat().st_size


def test_report_of_a_missing_or_empty_folder_exits_2(capsys, tmp_path):
    code, out, err = cli(capsys, "report", str(tmp_path / "nope"))
    assert code == 2 and out == "" and f"results folder '{tmp_path / 'nope'}' does not exist" in err
    assert not (tmp_path / "nope").exists()
    code, _, err = cli(capsys, "report", str(tmp_path))
    assert code == 2 and "holds no sweep runs; run 'bioplaus sweep CONFIG --out" in err


def test_diverging_run_is_marked_and_the_others_finish(tmp_path):
    runs = bioplaus.sweep(
        SMALL, rules=["bp"], optimizer="sgd", grid={"lr": [0.1, 1e12]}, seeds=1, out=tmp_path, workers=1, progress=False
    )
    status = runs.set_index("lr")["status"]
    assert status[0.1] == "done" and status[1e12] == "diverged"
    assert "loss became nan" in runs.set_index("lr").loc[1e12, "message"]
    report = bioplaus.results.report(tmp_path, write=False)
    acc = report.summary[report.summary["metric"] == "test/accuracy"].set_index("lr")["n"]
    assert acc[0.1] == 1 and acc[1e12] == 0  # a diverged run has no final value in the summary


def test_raising_run_is_marked_failed_and_retry_failed_reruns_it(capsys, tmp_path, flaky):
    config = tmp_path / "sweep.toml"
    config.write_text(
        f'task = "digits"\nrules = ["bp", "flaky"]\nepochs = 1\n[rule_options.flaky]\nmarker = "{flaky}"\n'
    )
    argv = ["sweep", str(config), "--out", str(tmp_path / "out"), "--seeds", "2", "--quiet", "--workers"]
    code, out, _ = cli(capsys, *argv, "2")  # two worker processes, which must import tests/sweep_helpers.py
    assert code == 1, out
    runs = bioplaus.results.load(tmp_path / "out").set_index(["rule", "seed"])
    assert (runs.loc["bp", "status"] == "done").all() and (runs.loc["flaky", "status"] == "failed").all()
    assert runs.loc[("flaky", 0), "message"] == f"RuntimeError: flaky failure: {flaky} exists"
    assert "4 runs: 2 done, 0 diverged, 2 failed" in out and "flaky failure" in out
    record = json.loads((tmp_path / "out" / "runs" / runs.loc[("flaky", 0), "run_id"] / "status.json").read_text())
    assert "Traceback" in record["traceback"] and "in update" in record["traceback"]

    flaky.unlink()
    assert cli(capsys, *argv, "1")[0] == 1  # failed runs stay failed without --retry-failed
    code, out, _ = cli(capsys, *argv, "1", "--retry-failed")
    assert code == 0 and "4 runs: 4 done" in out
    runs = bioplaus.results.load(tmp_path / "out").set_index(["rule", "seed"])
    assert runs["status"].eq("done").all() and runs.loc["flaky", "attempts"].eq(2).all()
    assert runs.loc["bp", "attempts"].eq(1).all()


def test_a_worker_that_dies_fails_its_run_and_the_sweep_goes_on(tmp_path, flaky):
    out = tmp_path / "out"
    options = {"rule_options": {"flaky": {"marker": str(flaky), "kill": True}}}
    kwargs = dict(rules=["flaky", "bp"], seeds=2, out=out, workers=2, progress=False)
    runs = bioplaus.sweep({**SMALL, **options}, **kwargs).set_index(["rule", "seed"])
    assert (runs.loc["flaky", "status"] == "failed").all() and (runs.loc["flaky", "message"] == WORKER_DIED).all()
    # a run that shared the pool when it broke may have been cut short too; it is failed, never left running
    assert runs["status"].isin(["done", "failed"]).all() and (runs.loc["bp", "status"] == "done").any()
    flaky.unlink()
    again = bioplaus.sweep({**SMALL, **options}, **{**kwargs, "workers": 1}, retry_failed=True)
    assert again["status"].eq("done").all()


def test_sigkill_at_any_point_then_resume_runs_everything_exactly_once(tmp_path):
    config = {**SMALL, "rules": ["bp", "fa"]}
    reference = tmp_path / "reference"
    bioplaus.sweep(config, seeds=2, out=reference, workers=1, threads=1, progress=False)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished: dict[Path, bytes] = {}  # status files of finished runs: never touched again

    def check_store() -> dict[str, str]:
        for path, text in finished.items():
            assert path.read_bytes() == text
        state = statuses(out)  # loading works whatever the kill left behind
        assert set(state.values()) <= {"pending", "running", "done"}
        finished.update({p: p.read_bytes() for p in out.glob("runs/*/status.json") if b'"done"' in p.read_bytes()})
        return state

    # killed by the process itself just before a file is renamed into place: while planning, before
    # a run's metrics, and between a run's metrics and its final status (leaving temporary files behind)
    for kind, n in [("config", 3), ("metrics", 2), ("done", 1)]:
        script = [sys.executable, str(HERE / "sweep_helpers.py"), str(out), kind, str(n), json.dumps(config)]
        done = subprocess.run(script, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        state = check_store()
    assert list(state.values()).count("done") == 1 and list(out.glob("runs/*/.*.tmp"))

    # killed from outside while a pool of two workers runs, as soon as one more run is done
    toml = tmp_path / "small.toml"
    toml.write_text(
        'task = "digits"\nrules = ["bp", "fa"]\nepochs = 2\nbatch_size = 128\n[model_options]\nhidden = [16]\n'
    )
    argv = ["sweep", str(toml), "--out", str(out), "--workers", "2", "--seeds", "2", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "bioplaus.cli", *argv], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len([p for p in out.glob("runs/*/status.json") if b'"done"' in p.read_bytes()]) < 2:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    workers = {json.loads(p.read_text()).get("pid") for p in out.glob("runs/*/status.json")} - {None, proc.pid}
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers):  # the workers notice that the sweep's process died and exit
        assert time.monotonic() < deadline, "worker processes outlived the sweep's process"
        time.sleep(0.1)
    check_store()

    runs = bioplaus.sweep(config, seeds=2, out=out, workers=1, threads=1, progress=False)
    assert len(runs) == 4 and runs["status"].eq("done").all() and runs["run_id"].is_unique
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(runs["run_id"])
    check_store()
    assert metric_files(out) == metric_files(reference)  # bit-identical to the uninterrupted sweep


# --- backends and options -------------------------------------------------------------------------


def test_ray_backend_gives_the_local_results(tmp_path, monkeypatch):
    """The Ray backend starts its own local instance (loopback, token authentication: no warning) and gives the
    local pool's results bit for bit."""
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # Ray sets it in this process; restored afterwards
    kwargs = dict(rules=["bp", "dfa"], seeds=2, threads=1, progress=False)
    local = bioplaus.sweep(SMALL, **kwargs, out=tmp_path / "local", workers=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        remote = bioplaus.sweep(SMALL, **kwargs, out=tmp_path / "ray", backend="ray", workers=2)
    assert not ray.is_initialized()
    if os.environ.get("RAY_AUTH_MODE") == "token":  # recent Ray
        assert not [w for w in caught if "without token authentication" in str(w.message)]
    assert remote["status"].eq("done").all()
    pd.testing.assert_frame_equal(
        local[["run_id", *local.attrs["metrics"]]], remote[["run_id", *remote.attrs["metrics"]]]
    )
    assert metric_files(tmp_path / "local") == metric_files(tmp_path / "ray")


def test_an_unreachable_ray_address_fails_fast_with_one_line(capsys, tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "sweep.toml"
    config.write_text('task = "digits"\nrules = ["bp"]\nepochs = 1\n')
    start = time.monotonic()
    code, out, err = cli(
        capsys, "sweep", str(config), "--out", str(tmp_path / "out"), "--quiet", "--backend", "ray",
        "--address", f"ray://127.0.0.1:{port}",
    )  # fmt: skip
    assert code == 2 and time.monotonic() - start < 30
    assert err.startswith(f"bioplaus: error: cannot reach the Ray cluster at ray://127.0.0.1:{port} within 5 s")
    assert err.count("\n") == 1 and "BIOPLAUS_RAY_TIMEOUT" in err


class _FakeRay:
    """Records what ``ray.init`` is called with."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def init(self, **options) -> None:
        self.calls.append(options)


def test_ray_connection_timeout_is_configurable(monkeypatch):
    timeouts = []

    def silent(target, timeout):
        timeouts.append(timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(ray_session.socket, "create_connection", silent)
    monkeypatch.setenv("BIOPLAUS_RAY_TIMEOUT", "0.25")
    fake = _FakeRay()
    with pytest.raises(ConfigError, match=r"cannot reach the Ray cluster at head:6379 within 0.25 s \(timed out\)"):
        ray_session.start_or_join(fake, "head:6379", 2)
    assert timeouts == [0.25] and fake.calls == []
    ray_session.start_or_join(fake, "auto", 2)  # resolved by Ray itself: not probed
    assert fake.calls == [{"address": "auto", "log_to_driver": False}]
    monkeypatch.setenv("BIOPLAUS_RAY_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="BIOPLAUS_RAY_TIMEOUT='soon' must be a positive number of seconds"):
        ray_session.start_or_join(fake, "head:6379", 2)


@pytest.mark.parametrize("mode", ["token", "disabled"])
def test_a_local_ray_instance_is_kept_to_loopback_and_warns_without_authentication(monkeypatch, mode):
    monkeypatch.setenv("RAY_AUTH_MODE", mode)
    fake = _FakeRay()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ray_session.start_or_join(fake, None, 3)
    assert fake.calls == [
        {"num_cpus": 3, "include_dashboard": False, "_node_ip_address": "127.0.0.1", "log_to_driver": False}
    ]
    messages = [str(w.message) for w in caught]
    assert messages == ([] if mode == "token" else [ray_session.UNAUTHENTICATED])


def test_missing_optional_packages_are_named_with_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'bioplaus\[ray\]'"):
        bioplaus.sweep(SMALL, out=tmp_path, backend="ray")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r"pip install 'bioplaus\[tensorboard\]'"):
        bioplaus.sweep(SMALL, out=tmp_path, tensorboard=True)
    assert not tmp_path.joinpath("runs").exists()


def test_tensorboard_events_per_run(tmp_path):
    pytest.importorskip("tensorboard")
    runs = bioplaus.sweep(SMALL, rules=["bp"], out=tmp_path, workers=1, tensorboard=True, progress=False)
    events = list((tmp_path / "runs" / runs["run_id"][0] / "tensorboard").rglob("events.out.tfevents.*"))
    assert len(events) >= 2  # the scalars and the hparams summary


def test_custom_rule_defined_in_an_interactive_session_needs_workers_1(tmp_path, monkeypatch):
    class Interactive(bioplaus.rules.Backprop):
        """BP, registered from __main__."""

    Interactive.__module__ = "__main__"
    monkeypatch.delattr(sys.modules["__main__"], "__file__", raising=False)
    bioplaus.rules.register("interactive_bp", Interactive)
    try:
        with pytest.raises(ConfigError, match="rule 'interactive_bp' is defined in __main__.*use workers=1"):
            bioplaus.sweep(SMALL, rules=["bp", "interactive_bp"], out=tmp_path, workers=2, progress=False)
    finally:
        RULES._entries.pop("interactive_bp")
