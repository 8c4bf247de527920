"""Random hyperparameter search: budget, resume, saved trials, failures, worker processes."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from momentum.data import synthetic_prices
from momentum.features import compute_features
from training import models, search
from training.datasets import ModelData, label_rows
from training.models import Universe, get_spec
from training.search import SearchResult, load_trial_model, run_search
from training.train import FitResult, TrainConfig, layout_for, validation_sharpe

REPO = Path(__file__).resolve().parents[2]
FAST = TrainConfig(max_epochs=3, patience=25, seed=0, device="cpu")


@dataclasses.dataclass(frozen=True)
class Panel:
    data: ModelData
    universe: Universe
    train_rows: np.ndarray
    valid_rows: np.ndarray


def _panel(n_assets: int = 8, n_days: int = 900) -> Panel:
    synthetic = synthetic_prices(n_assets=n_assets, n_days=n_days, n_markets=2, seed=0)
    features = compute_features(synthetic.prices)
    data = ModelData.from_features(features)
    universe = Universe.from_market_map(features.tickers, len(features.names), synthetic.markets)
    split = int(len(features.dates) * 0.8)
    return Panel(data, universe, label_rows(320, split), label_rows(split, len(features.dates)))


@pytest.fixture(scope="module")
def panel() -> Panel:
    return _panel()


def _search(panel: Panel, directory: Path, n_trials: int, **kwargs: Any) -> SearchResult:
    kwargs.setdefault("base", FAST)
    return run_search(
        "slp",
        panel.data,
        panel.universe,
        panel.train_rows,
        panel.valid_rows,
        directory=directory,
        n_trials=n_trials,
        **kwargs,
    )


def _study(directory: Path, name: str = "slp-search") -> optuna.Study:
    # the same opener as the search: safe while another process creates the file
    return optuna.load_study(study_name=name, storage=search._storage(Path(directory)))


def _states(study: optuna.Study) -> dict[int, TrialState]:
    return {t.number: t.state for t in study.get_trials()}


def test_in_process_search_completes_budget_and_saves_rebuildable_models(
    panel: Panel, tmp_path: Path
) -> None:
    records: list[dict] = []
    result = _search(panel, tmp_path, 3, progress=records.append)

    study = _study(tmp_path)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3 == result.n_complete
    assert len(study.trials) == 3
    values = {t.number: t.value for t in complete}
    assert result.best_value == max(values.values())
    assert values[result.best_trial] == result.best_value
    assert result.best_params == study.trials[result.best_trial].params
    assert set(result.best_params) == set(get_spec("slp").search_space)
    assert result.directory == tmp_path

    # progress: once per completed trial, running best and count
    assert [r["trial"] for r in records] == [0, 1, 2]
    assert [r["complete"] for r in records] == [1, 2, 3]
    assert all(r["of"] == 3 for r in records)
    for i, r in enumerate(records):
        assert r["value"] == values[i]
        assert r["best"] == max(values[j] for j in range(i + 1))

    spec = get_spec("slp")
    for trial in complete:
        for attr in ("best_epoch", "initial_valid_sharpe", "stopped", "seconds", "pid"):
            assert attr in trial.user_attrs
        assert trial.user_attrs["pid"] == os.getpid()  # workers=1 runs in this process
        payload = torch.load(
            tmp_path / "trials" / f"{trial.number}.pt", map_location="cpu", weights_only=True
        )
        assert payload["model"] == "slp"
        assert payload["hyper"] == trial.params
        assert payload["best_valid_sharpe"] == trial.value
        assert payload["best_epoch"] == trial.user_attrs["best_epoch"]
        assert payload["config"]["l1"] == trial.params["l1"]
        assert payload["train_config"]["lr"] == trial.params["lr"]
        assert payload["train_config"]["max_epochs"] == FAST.max_epochs

        model, config = load_trial_model(tmp_path, trial.number)
        assert config == spec.config_cls(**payload["config"])
        # the rebuilt weights reproduce the validation Sharpe the trial stored
        layout = layout_for(spec, config, TrainConfig(**payload["train_config"]))
        sharpe = validation_sharpe(model, layout, panel.data, panel.valid_rows)
        assert sharpe == pytest.approx(trial.value, rel=1e-9, abs=1e-12)
    assert not list((tmp_path / "trials").glob("*.tmp"))


def test_resume_fails_stale_running_trials_and_keeps_completed_ones(
    panel: Panel, tmp_path: Path
) -> None:
    first = _search(panel, tmp_path, 2)
    assert first.n_complete == 2
    before = {t.number: t for t in _study(tmp_path).trials}

    # a trial left RUNNING, as by a killed worker
    stale = _study(tmp_path).ask()
    assert _states(_study(tmp_path))[stale.number] == TrialState.RUNNING

    result = _search(panel, tmp_path, 3)

    study = _study(tmp_path)
    states = _states(study)
    assert states[stale.number] == TrialState.FAIL
    assert sum(s == TrialState.COMPLETE for s in states.values()) == 3 == result.n_complete
    after = {t.number: t for t in study.trials}
    for number, old in before.items():
        assert after[number].state == TrialState.COMPLETE
        assert after[number].value == old.value
        assert after[number].params == old.params
        assert after[number].datetime_complete == old.datetime_complete
    # exactly one new trial, numbered after the stale one
    assert set(after) == {0, 1, stale.number, stale.number + 1}
    assert not (tmp_path / "trials" / f"{stale.number}.pt").exists()

    # already at budget: nothing runs, nothing changes
    again = _search(panel, tmp_path, 3)
    assert again == result
    assert len(_study(tmp_path).trials) == len(after)


def test_resumed_search_draws_new_points_and_fresh_search_is_reproducible(
    panel: Panel, tmp_path: Path
) -> None:
    base = dataclasses.replace(FAST, max_epochs=1)
    _search(panel, tmp_path / "a", 2, base=base, seed=7)
    _search(panel, tmp_path / "a", 4, base=base, seed=7)
    _search(panel, tmp_path / "b", 2, base=base, seed=7)
    a = [t.params for t in _study(tmp_path / "a").trials]
    b = [t.params for t in _study(tmp_path / "b").trials]
    assert b == a[:2]  # same seed, same draws
    # the resumed run's sampler is seeded with the trial count too, so it does not replay
    assert a[2:] != a[:2]


def _nan_then_real(n_nan: int) -> Any:
    """A stand-in for `train` whose first `n_nan` calls end with a NaN validation Sharpe."""
    calls = {"n": 0}
    real = search.train

    def fake(name: str, data: ModelData, universe: Universe, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= n_nan:
            spec = get_spec(name)
            config = spec.config(universe)
            return config, FitResult(spec.build(config), 0, math.nan, math.nan, "diverged")
        return real(name, data, universe, *args, **kwargs)

    return fake


def test_non_finite_sharpe_marks_the_trial_failed_and_does_not_count(
    panel: Panel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "train", _nan_then_real(1))
    result = _search(panel, tmp_path, 2)

    states = _states(_study(tmp_path))
    assert states == {0: TrialState.FAIL, 1: TrialState.COMPLETE, 2: TrialState.COMPLETE}
    assert result.n_complete == 2
    assert result.best_trial in (1, 2)
    assert not (tmp_path / "trials" / "0.pt").exists()
    assert _study(tmp_path).trials[0].user_attrs["stopped"] == "diverged"


def test_search_gives_up_when_every_trial_diverges(
    panel: Panel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "train", _nan_then_real(10**6))
    with pytest.raises(RuntimeError, match="0 of 2 complete trials: too many trials failed"):
        _search(panel, tmp_path, 2)
    states = list(_states(_study(tmp_path)).values())
    # the allowance is max(10, n_trials) failures per run
    assert states == [TrialState.FAIL] * 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_trials": 0}, "`n_trials` must be an integer >= 1, got 0"),
        ({"n_trials": True}, "`n_trials` must be an integer >= 1, got True"),
        ({"n_trials": 2.5}, "`n_trials` must be an integer >= 1, got 2.5"),
        ({"workers": 0}, "`workers` must be an integer >= 1, got 0"),
    ],
)
def test_bad_budget_arguments_are_rejected(
    panel: Panel, tmp_path: Path, kwargs: dict, match: str
) -> None:
    args = {"n_trials": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        _search(panel, tmp_path, **args)
    assert not (tmp_path / "study.db").exists()


def test_unknown_model_and_search_keys_are_rejected(
    panel: Panel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        run_search(
            "nope",
            panel.data,
            panel.universe,
            panel.train_rows,
            panel.valid_rows,
            directory=tmp_path,
            n_trials=1,
        )
    spec = get_spec("slp")
    monkeypatch.setitem(
        models.REGISTRY,
        "slp",
        dataclasses.replace(spec, search_space={**spec.search_space, "momentum": [0.9]}),
    )
    with pytest.raises(ValueError, match="'momentum' is neither a model config field"):
        _search(panel, tmp_path, 1)
    monkeypatch.setitem(models.REGISTRY, "slp", dataclasses.replace(spec, search_space={"l1": []}))
    with pytest.raises(ValueError, match="search space 'l1' needs a non-empty list"):
        _search(panel, tmp_path, 1)


def test_mismatched_data_rows_and_study_are_rejected(panel: Panel, tmp_path: Path) -> None:
    small = Universe(panel.universe.tickers[:3], panel.universe.n_features)
    with pytest.raises(ValueError, match="`universe` has 3 assets x 8 features but `data` has 8"):
        run_search(
            "slp",
            panel.data,
            small,
            panel.train_rows,
            panel.valid_rows,
            directory=tmp_path,
            n_trials=1,
        )
    with pytest.raises(ValueError, match="`train_rows` and `valid_rows` overlap at"):
        run_search(
            "slp",
            panel.data,
            panel.universe,
            panel.train_rows,
            panel.train_rows[-5:],
            directory=tmp_path,
            n_trials=1,
        )
    with pytest.raises(ValueError, match="at least 2 `valid_rows`, got 399 and 1"):
        run_search(
            "slp",
            panel.data,
            panel.universe,
            panel.train_rows,
            panel.valid_rows[:1],
            directory=tmp_path,
            n_trials=1,
        )
    # a study name already used by another model is refused, not silently mixed
    _search(panel, tmp_path, 1, base=dataclasses.replace(FAST, max_epochs=1), study_name="s")
    with pytest.raises(ValueError, match="searches model 'slp', not 'mlp'"):
        run_search(
            "mlp",
            panel.data,
            panel.universe,
            panel.train_rows,
            panel.valid_rows,
            directory=tmp_path,
            n_trials=1,
            study_name="s",
        )


def test_load_trial_model_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"trial 4: .*trials[/\\]4\.pt does not exist"):
        load_trial_model(tmp_path, 4)


# The interrupted run: 2 spawned workers, trials slow enough (patience never
# triggers) that the first COMPLETE trial is seen well before the third.
def _open_study_storage(directory: str, barrier: Any) -> str | None:
    barrier.wait()  # every process opens the new file at the same moment
    try:
        storage = search._storage(Path(directory))
        storage.get_all_studies()  # every table must be there, not just the file
    except Exception as exc:  # reported to the test, which names it
        return repr(exc)
    return None


def test_processes_opening_a_new_study_file_together_all_get_a_complete_schema(
    tmp_path: Path,
) -> None:
    # Optuna builds its schema table by table; before the schema was published
    # atomically, about one round in four failed here with "table ... already exists".
    ctx = multiprocessing.get_context("spawn")
    n = 4
    with ctx.Manager() as manager, ctx.Pool(n) as pool:
        for round_ in range(6):
            directory = tmp_path / str(round_)
            barrier = manager.Barrier(n)
            errors = pool.starmap(_open_study_storage, [(str(directory), barrier)] * n)
            assert errors == [None] * n, f"round {round_}: {errors}"
            assert [p.name for p in directory.iterdir()] == ["study.db"]  # no private file left


def test_a_late_schema_publisher_leaves_the_existing_study_alone(tmp_path: Path) -> None:
    # the loser of the race: the file appeared after its existence check
    study = optuna.create_study(study_name="kept", storage=search._storage(tmp_path))
    study.enqueue_trial({"x": 1})
    search._publish_schema((tmp_path / search.STUDY_FILE).resolve())
    assert [p.name for p in tmp_path.iterdir()] == ["study.db"]
    kept = _study(tmp_path, "kept")
    assert [t.state for t in kept.trials] == [TrialState.WAITING]


SEARCH_CODE = textwrap.dedent(
    """
    import sys
    from tests.training.test_search import _panel, SLOW
    from training.search import run_search
    p = _panel()
    run_search("slp", p.data, p.universe, p.train_rows, p.valid_rows, directory=sys.argv[1],
               n_trials=3, base=SLOW, workers=2, seed=3)
    """
)
SLOW = TrainConfig(max_epochs=400, patience=400, seed=0, device="cpu")


@pytest.mark.slow
def test_two_workers_share_the_study_and_resume_after_being_killed(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SEARCH_CODE, str(tmp_path)],
        cwd=REPO,
        env=env,
        start_new_session=True,  # its own process group: the kill reaches the workers too
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no trial completed in time"
            if (tmp_path / "study.db").exists():
                try:
                    trials = _study(tmp_path).trials
                except KeyError:  # the study row is not written yet
                    trials = []
                # wait until both workers have started a trial and one has finished
                pids = {t.user_attrs.get("pid") for t in trials} - {None}
                if len(pids) == 2 and any(t.state == TrialState.COMPLETE for t in trials):
                    break
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()

    killed = {t.number: t for t in _study(tmp_path).trials}
    done_before = {n: t for n, t in killed.items() if t.state == TrialState.COMPLETE}
    running_before = {n for n, t in killed.items() if t.state == TrialState.RUNNING}
    assert 1 <= len(done_before) < 3
    assert running_before, "a killed worker should have left a RUNNING trial"
    # a trial created just before the kill may not have recorded its pid yet
    pids_before = {t.user_attrs.get("pid") for t in killed.values()} - {None}
    assert len(pids_before) == 2 and proc.pid not in pids_before  # two worker processes

    panel = _panel()
    result = run_search(
        "slp",
        panel.data,
        panel.universe,
        panel.train_rows,
        panel.valid_rows,
        directory=tmp_path,
        n_trials=3,
        base=SLOW,
        workers=2,
        seed=3,
    )

    study = _study(tmp_path)
    after = {t.number: t for t in study.trials}
    complete = {n for n, t in after.items() if t.state == TrialState.COMPLETE}
    assert len(complete) == 3 == result.n_complete  # the shared budget never overshoots
    for number, old in done_before.items():
        assert after[number].state == TrialState.COMPLETE
        assert after[number].value == old.value
        assert after[number].datetime_complete == old.datetime_complete
    for number in running_before:
        assert after[number].state == TrialState.FAIL
    new = complete - set(done_before)
    assert min(new) > max(killed)  # the resumed run re-ran nothing, it added trials
    assert os.getpid() not in {after[n].user_attrs["pid"] for n in new}
    assert {f.name for f in (tmp_path / "trials").glob("*.pt")} >= {f"{n}.pt" for n in complete}
