"""Random hyperparameter search with Optuna, resumable and shared by local workers.

A search draws each key of a registry model's ``spec.search_space`` uniformly
from its list of choices (``RandomSampler`` + ``suggest_categorical``: the
papers' random grid search), trains the model with `training.train.train` and
maximises the best validation score that early stopping found (by default the
Sharpe ratio net of the selection cost: `training.train`).

Layout of a search directory::

    <directory>/study.db         the Optuna study (SQLite, RDBStorage)
    <directory>/trials/<n>.pt    weights and configs of every COMPLETE trial n

Resuming. The study is opened with ``load_if_exists=True``, so running the
same search again continues it: completed trials are never redone and the
budget ``n_trials`` counts COMPLETE trials only. Trials a killed process left
RUNNING are marked FAIL at start-up, before any worker exists, so no live
trial can be mistaken for a stale one. Each worker's sampler is seeded from
``(seed, worker index, trials already in the study)``: a resumed search draws
new points instead of replaying the first run's draws.

Budget. Workers share a slot counter (a spawn-context lock and value): a
worker claims a slot before it starts a trial and gives it back if the trial
fails, so at most ``n_trials`` COMPLETE trials exist at the end, even with
several workers finishing at once (``MaxTrialsCallback`` alone would let each
of W workers start one last trial, up to W - 1 too many). Every worker also
re-reads the COMPLETE count before each trial.

Failure policy. A trial whose best validation Sharpe is not finite (training
diverged before any finite epoch, or flat positions) raises `TrialDiverged`,
which the workers pass to ``optimize(catch=...)``: the trial is stored as FAIL,
saves no weights, does not count and its slot goes back to the budget. A trial
that diverged *after* a finite best epoch keeps its restored best weights and
counts (user attr ``stopped == "diverged"``). After ``max(10, n_trials)``
failed trials in one run the search gives up with a `RuntimeError`, so a
model that always diverges cannot loop forever. Any other exception is a bug:
its trial is FAIL and the exception propagates (in-process) or the worker
exits non-zero and `run_search` raises.

Execution. ``workers=1`` runs in the calling process. More workers are
``multiprocessing.get_context("spawn")`` processes (never fork: torch and
numba keep threads), each with ``torch.set_num_threads(cpu_count // workers)``;
the data reach them pickled through the process arguments. SQLite serialises
the writers; a 60 s busy timeout rides over lock contention.
Spawned workers re-import the caller's main module, so a script that calls
`run_search` with ``workers > 1`` needs the usual ``if __name__ == "__main__":``
guard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from training.datasets import ModelData
from training.models import ModelSpec, Universe, get_spec
from training.train import TrainConfig, check_rows, split_hyperparameters, train

__all__ = ["SearchResult", "TrialDiverged", "load_trial", "load_trial_model", "run_search"]

STUDY_FILE = "study.db"
TRIALS_DIR = "trials"
# SQLite busy timeout (seconds) while another worker holds the write lock
_SQLITE_TIMEOUT = 60
# how often the main process polls the study for progress while workers run
_POLL_SECONDS = 0.5


class TrialDiverged(RuntimeError):
    """A trial ended without a finite validation Sharpe; it is stored as FAIL.

    ``attrs`` carries the trial's user attributes (how training stopped), so
    a failed trial still records them; both travel through pickling (Ray).
    """

    def __init__(self, message: str, attrs: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, attrs)
        self.attrs = dict(attrs or {})

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class SearchResult:
    """Outcome of a search: the best COMPLETE trial and where the study lives.

    Attributes
    ----------
    best_params : dict
        The sampled hyperparameters of the best trial (search-space keys).
    best_value : float
        Its best validation score, the figure trials are selected on (by default the
        Sharpe ratio net of the selection cost; see `training.train`).
    best_trial : int
        Its trial number; the weights are in ``directory / "trials" / f"{best_trial}.pt"``.
    n_complete : int
        COMPLETE trials in the study (equals the requested ``n_trials``).
    directory : Path
        The search directory.
    best_attrs : dict
        The best trial's user attributes: its gross and net validation Sharpe
        (``valid_sharpe``, ``valid_net_sharpe``), best epoch, how it stopped.
    ranked : tuple of (int, float)
        Every COMPLETE trial as ``(number, value)``, best first (ties: lower number
        first), for ensembles of the top trials.
    """

    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    n_complete: int
    directory: Path
    best_attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    ranked: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs; pickled into spawned workers."""

    name: str
    data: ModelData
    universe: Universe
    train_rows: np.ndarray
    valid_rows: np.ndarray
    base: TrainConfig
    directory: Path
    study_name: str
    n_trials: int
    workers: int
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # further (train, valid) folds each trial is also scored on (`training.splits`)
    folds: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    @property
    def threads(self) -> int:
        """Torch threads per trial: the cores shared by the concurrent trials.

        Set explicitly for every executor, so a trial computes the same
        numbers wherever it runs (Ray workers default to one thread).
        """
        return max(1, (os.cpu_count() or 1) // self.workers)

    @property
    def space(self) -> dict[str, list[Any]]:
        """The searched keys: the model's space minus the pinned ones."""
        spec = get_spec(self.name)
        return {k: list(v) for k, v in spec.search_space.items() if k not in self.fixed}


class _Budget:
    """Trial slots shared by all workers of one run, and the run's failure allowance.

    ``remaining`` starts at the number of trials still to complete; a worker
    takes one before starting a trial and returns it if the trial fails, so
    the number of COMPLETE trials can never pass ``n_trials``.
    """

    def __init__(self, ctx: Any, remaining: int, max_failures: int) -> None:
        self._lock = ctx.Lock()
        self._remaining = ctx.RawValue("i", remaining)
        self._failures_left = ctx.RawValue("i", max_failures)

    def claim(self) -> bool:
        with self._lock:
            if self._remaining.value <= 0:
                return False
            self._remaining.value -= 1
            return True

    def give_back(self) -> None:
        """Return the slot of a failed trial; after too many failures stop everyone."""
        with self._lock:
            self._failures_left.value -= 1
            if self._failures_left.value > 0:
                self._remaining.value += 1
            else:
                self._remaining.value = 0

    def exhausted_by_failures(self) -> bool:
        with self._lock:
            return self._failures_left.value <= 0


def _storage(directory: Path) -> optuna.storages.RDBStorage:
    """The study's SQLite storage, safe to open from several processes at once.

    Optuna creates its schema on first open, table by table. Two processes
    opening a new file together race on it (``table trials already exists``,
    ``UNIQUE constraint failed: alembic_version``), and a reader can see a
    half-made schema. So the schema is built in a private file and hard-linked
    into place: ``os.link`` fails if the name exists, so exactly one process
    publishes a complete schema and nobody ever opens a partial one.
    """
    path = (directory / STUDY_FILE).resolve()
    if not path.exists():
        _publish_schema(path)
    return optuna.storages.RDBStorage(
        _sqlite_url(path), engine_kwargs={"connect_args": {"timeout": _SQLITE_TIMEOUT}}
    )


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _publish_schema(path: Path) -> None:
    """Create an empty Optuna schema at `path` unless another process got there first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    private = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    private.unlink(missing_ok=True)  # a leftover from a killed process with this pid
    try:
        optuna.storages.RDBStorage(_sqlite_url(private)).engine.dispose()
        # another process published first if the name exists; its schema is the same
        with contextlib.suppress(FileExistsError):
            os.link(private, path)
    finally:
        private.unlink(missing_ok=True)


def _sampler_seed(seed: int, worker: int, n_existing: int) -> int:
    """Independent sampler seed per (base seed, worker, trials already in the study)."""
    return int(np.random.SeedSequence([seed, worker, n_existing]).generate_state(1)[0])


def _trial_path(directory: Path, number: int) -> Path:
    return Path(directory) / TRIALS_DIR / f"{number}.pt"


def _save_trial(path: Path, payload: dict[str, Any]) -> None:
    """Write via a temporary file and `os.replace`, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _run_trial(job: _Job, number: int, hyper: Mapping[str, Any]) -> tuple[float, dict[str, Any]]:
    """Train one trial: the same function for local workers and Ray tasks.

    Returns the best validation score (what the trial is selected on: by default the
    Sharpe net of the selection cost, see `training.train`; with extra folds, the mean
    of every fold's score) and the user attributes, among them the gross and net Sharpe
    (means over the folds); writes the weights file of the main split's model. Raises
    `TrialDiverged` without a finite score.
    """
    torch.set_num_threads(job.threads)
    hyper = {**job.fixed, **hyper}
    start = time.perf_counter()
    model_config, result = train(
        job.name, job.data, job.universe, job.train_rows, job.valid_rows, hyper, job.base
    )
    # the extra folds only score: each trains a model of its own, which is not kept
    fold_results = [result] + [
        train(job.name, job.data, job.universe, rows, valid, hyper, job.base)[1]
        for rows, valid in job.folds
    ]
    attrs: dict[str, Any] = {
        "best_epoch": result.best_epoch,
        "initial_valid_sharpe": result.initial_valid_sharpe,
        "valid_sharpe": float(np.mean([r.best_valid_sharpe for r in fold_results])),
        "valid_net_sharpe": float(np.mean([r.best_valid_net_sharpe for r in fold_results])),
        "stopped": result.stopped,
        "seconds": time.perf_counter() - start,
    }
    if job.folds:  # main fold (the last block) first
        attrs["fold_scores"] = [r.best_valid_score for r in fold_results]
    value = float(np.mean([r.best_valid_score for r in fold_results]))
    if not math.isfinite(value):
        raise TrialDiverged(
            f"{job.name} trial {number}: best validation score is {value} "
            f"(training stopped: {result.stopped}); params {hyper}",
            attrs,
        )
    _, train_part = split_hyperparameters(get_spec(job.name), hyper)
    _save_trial(
        _trial_path(job.directory, number),
        {
            "model": job.name,
            "config": dataclasses.asdict(model_config),
            "hyper": dict(hyper),
            # the training settings of this trial (base + sampled): layouts need seq_len
            "train_config": dataclasses.asdict(dataclasses.replace(job.base, **train_part)),
            "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
            "best_valid_score": value,
            "best_valid_sharpe": result.best_valid_sharpe,
            "best_epoch": result.best_epoch,
        },
    )
    return value, attrs


def _record(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _suggest(trial: optuna.Trial, space: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    return {key: trial.suggest_categorical(key, list(choices)) for key, choices in space.items()}


def _objective(job: _Job, worker: int) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        # recorded first, so even a trial that dies mid-training says who ran it
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("worker", worker)
        try:
            value, attrs = _run_trial(job, trial.number, _suggest(trial, job.space))
        except TrialDiverged as err:
            _record(trial, err.attrs)
            raise
        _record(trial, attrs)
        return value

    return objective


def _work(
    job: _Job,
    worker: int,
    sampler_seed: int,
    budget: _Budget,
    on_complete: Callable[[FrozenTrial], None] | None = None,
) -> None:
    """One worker: run trials while budget slots remain (in-process or a spawned process)."""
    study = optuna.load_study(
        study_name=job.study_name,
        storage=_storage(job.directory),
        sampler=optuna.samplers.RandomSampler(seed=sampler_seed),
    )
    objective = _objective(job, worker)
    finished: list[FrozenTrial] = []
    while budget.claim():
        if len(_complete(study)) >= job.n_trials:
            break
        finished.clear()
        study.optimize(
            objective,
            n_trials=1,
            catch=(TrialDiverged,),
            callbacks=[lambda _study, trial: finished.append(trial)],
        )
        trial = finished[-1]
        if trial.state != TrialState.COMPLETE:
            budget.give_back()
        elif on_complete is not None:
            on_complete(trial)


def _worker_main(job: _Job, worker: int, sampler_seed: int, budget: _Budget) -> None:
    _work(job, worker, sampler_seed, budget)


def _validate(
    spec: ModelSpec,
    data: ModelData,
    universe: Universe,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    n_trials: int,
    workers: int,
) -> None:
    for label, value in (("n_trials", n_trials), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"`{label}` must be an integer >= 1, got {value!r}")
    if not spec.search_space:
        raise ValueError(f"{spec.name}: the search space is empty")
    for key, choices in spec.search_space.items():
        if isinstance(choices, str) or len(choices) == 0:
            raise ValueError(f"{spec.name}: search space {key!r} needs a non-empty list of choices")
    # raises naming any key that is neither a model-config field nor a training setting
    split_hyperparameters(spec, {key: choices[0] for key, choices in spec.search_space.items()})
    if universe.n_assets != data.n_assets or universe.n_features != data.x.shape[-1]:
        raise ValueError(
            f"`universe` has {universe.n_assets} assets x {universe.n_features} features but "
            f"`data` has {data.n_assets} x {data.x.shape[-1]}"
        )
    check_rows(train_rows, valid_rows)


def _progress_record(trial: FrozenTrial, complete: list[FrozenTrial], n_trials: int) -> dict:
    values = [t.value for t in complete if t.value is not None]
    return {
        "trial": trial.number,
        "value": trial.value,
        "best": max(values) if values else trial.value,
        "complete": len(complete),
        "of": n_trials,
    }


def run_search(
    name: str,
    data: ModelData,
    universe: Universe,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    *,
    directory: str | Path,
    n_trials: int,
    base: TrainConfig = TrainConfig(),  # noqa: B008 - frozen dataclass, safe as a default
    workers: int = 1,
    seed: int = 0,
    study_name: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    fixed: Mapping[str, Any] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    folds: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> SearchResult:
    """Random search over ``get_spec(name).search_space``, resuming any study in `directory`.

    Parameters
    ----------
    name : str
        Registry model name (``slp``, ``dmn``, ...).
    data : ModelData
        Model arrays, x of shape (T, N, d).
    universe : Universe
        The N tickers and their markets, matching `data`.
    train_rows, valid_rows : ndarray of int
        Decision rows for training and for early stopping (`training.datasets.label_rows`).
    directory : str or Path
        Search directory (created if missing): ``study.db`` and ``trials/<n>.pt``.
    n_trials : int
        COMPLETE trials the study must hold at the end (earlier runs count).
    base : TrainConfig
        Training settings; sampled keys (lr, batch_size, ...) override them.
    workers : int
        Local processes sharing the study; 1 runs in this process.
    seed : int
        Base seed of the samplers (the model initialisation uses ``base.seed``).
    study_name : str, optional
        Defaults to ``f"{name}-search"``.
    progress : callable, optional
        Called in this process after each trial completed in this run with
        ``{"trial", "value", "best", "complete", "of"}``.
    fixed : mapping, optional
        Hyperparameters pinned for every trial; their keys are not searched.
    executor : {"local", "ray"}
        ``"ray"`` runs each trial as a Ray task (`workers` at a time) while
        this process asks and tells the study, so the study never leaves this
        machine and Ray workers need no shared storage.
    ray_address : str, optional
        ``ray.init(address=...)``; default a local Ray started here.
    folds : sequence of (train_rows, valid_rows), optional
        Further splits every trial is also trained and scored on (blocked folds,
        `training.splits.blocked_folds`); the trial's value is the mean score of all
        its splits, and the model of (`train_rows`, `valid_rows`) is the one kept.

    Returns
    -------
    SearchResult
    """
    spec = get_spec(name)
    train_rows = np.asarray(train_rows, dtype=np.int64)
    valid_rows = np.asarray(valid_rows, dtype=np.int64)
    fixed = dict(fixed or {})
    _validate(spec, data, universe, train_rows, valid_rows, n_trials, workers)
    extra = tuple((np.asarray(t, dtype=np.int64), np.asarray(v, dtype=np.int64)) for t, v in folds)
    for fold_train, fold_valid in extra:
        check_rows(fold_train, fold_valid)
    if executor not in ("local", "ray"):
        raise ValueError(f"`executor` must be 'local' or 'ray', got {executor!r}")
    # raises naming any pinned key that is neither a config field nor a training setting
    split_hyperparameters(spec, fixed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    study_name = study_name or f"{name}-search"

    study = optuna.create_study(
        storage=_storage(directory),
        study_name=study_name,
        direction="maximize",
        load_if_exists=True,
    )
    recorded = study.user_attrs.get("model")
    if recorded is None:
        study.set_user_attr("model", name)
    elif recorded != name:
        raise ValueError(
            f"study {study_name!r} in {directory} searches model {recorded!r}, not {name!r}; "
            "pass another `study_name` or `directory`"
        )
    # no worker runs yet, so every RUNNING trial was left by a killed process
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(stale.number, state=TrialState.FAIL)

    n_existing = len(study.get_trials(deepcopy=False))
    already = {t.number for t in _complete(study)}
    remaining = max(0, n_trials - len(already))
    job = _Job(
        name,
        data,
        universe,
        train_rows,
        valid_rows,
        base,
        directory,
        study_name,
        n_trials,
        workers,
        fixed,
        extra,
    )
    ctx = multiprocessing.get_context("spawn")
    budget = _Budget(ctx, remaining, max_failures=max(10, n_trials))
    seeds = [_sampler_seed(seed, w, n_existing) for w in range(workers)]

    if remaining and executor == "ray":
        _run_ray(job, seeds[0], budget, study, progress, ray_address)
    elif remaining and workers == 1:

        def report(trial: FrozenTrial) -> None:
            if progress is not None:
                progress(_progress_record(trial, _complete(study), n_trials))

        _work(job, 0, seeds[0], budget, on_complete=report)
    elif remaining:
        _run_workers(ctx, job, seeds, budget, study, already, progress)

    complete = _complete(study)
    if len(complete) < n_trials:
        reason = (
            "too many trials failed (non-finite validation score)"
            if budget.exhausted_by_failures()
            else "the workers stopped early"
        )
        raise RuntimeError(
            f"search {study_name!r} ended with {len(complete)} of {n_trials} complete trials: "
            f"{reason}; see {directory / STUDY_FILE}"
        )
    ranked = sorted(
        complete, key=lambda t: (-(t.value if t.value is not None else -math.inf), t.number)
    )
    best = ranked[0]
    return SearchResult(
        best_params=dict(best.params),
        best_value=float(best.value) if best.value is not None else math.nan,
        best_trial=best.number,
        n_complete=len(complete),
        directory=directory,
        best_attrs=dict(best.user_attrs),
        ranked=tuple(
            (t.number, float(t.value) if t.value is not None else math.nan) for t in ranked
        ),
    )


def _run_workers(
    ctx: Any,
    job: _Job,
    seeds: list[int],
    budget: _Budget,
    study: optuna.Study,
    already: set[int],
    progress: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Start spawned workers, report completions while they run, and check their exits."""
    reported = set(already)

    def report() -> None:
        if progress is None:
            return
        complete = _complete(study)
        fresh = sorted(
            (t for t in complete if t.number not in reported),
            key=lambda t: (t.datetime_complete, t.number),
        )
        for trial in fresh:
            reported.add(trial.number)
            done = [t for t in complete if t.number in reported]
            progress(_progress_record(trial, done, job.n_trials))

    processes = [
        ctx.Process(
            target=_worker_main,
            args=(job, w, seeds[w], budget),
            name=f"search-{job.study_name}-{w}",
        )
        for w in range(job.workers)
    ]
    try:
        for p in processes:
            p.start()
        while any(p.is_alive() for p in processes):
            time.sleep(_POLL_SECONDS)
            report()
        report()
    finally:
        # an interrupted main process does not leave orphan trainers behind
        for p in processes:
            if p.is_alive():
                p.terminate()
            p.join()
    failed = [(p.name, p.exitcode) for p in processes if p.exitcode != 0]
    if failed:
        raise RuntimeError(
            f"search {job.study_name!r}: workers exited abnormally {failed}; their trials are "
            f"FAIL in {job.directory / STUDY_FILE}"
        )


def _run_ray(
    job: _Job,
    sampler_seed: int,
    budget: _Budget,
    study: optuna.Study,
    progress: Callable[[dict[str, Any]], None] | None,
    address: str | None,
) -> None:
    """Trials as Ray tasks: ask here, train remotely (`_run_trial`), tell here.

    One sampler, asked in trial order, draws the same points as a single
    local worker with the same seed, so both executors run the same trials.
    """
    try:
        import ray
    except ImportError as err:  # pragma: no cover - depends on the extra
        raise RuntimeError("--executor ray needs the `ray` extra: pip install '.[ray]'") from err
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        study.sampler = optuna.samplers.RandomSampler(seed=sampler_seed)
        remote = ray.remote(num_cpus=1)(_run_trial)
        job_ref = ray.put(job)
        pending: dict[Any, optuna.Trial] = {}
        while True:
            while len(pending) < job.workers and budget.claim():
                trial = study.ask()
                trial.set_user_attr("worker", "ray")
                pending[remote.remote(job_ref, trial.number, _suggest(trial, job.space))] = trial
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            trial = pending.pop(done[0])
            try:
                value, attrs = ray.get(done[0])
            except ray.exceptions.RayTaskError as err:
                if isinstance(err.cause, TrialDiverged):
                    _record(trial, err.cause.attrs)
                study.tell(trial, state=TrialState.FAIL)
                if not isinstance(err.cause, TrialDiverged):
                    raise
                budget.give_back()
                continue
            _record(trial, attrs)
            frozen = study.tell(trial, value)
            if progress is not None:
                progress(_progress_record(frozen, _complete(study), job.n_trials))
    finally:
        if started:
            ray.shutdown()


def load_trial_model(directory: str | Path, trial_number: int) -> tuple[nn.Module, Any]:
    """`load_trial` without the hyperparameters."""
    model, config, _ = load_trial(directory, trial_number)
    return model, config


def load_trial(directory: str | Path, trial_number: int) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Rebuild the trained model of a COMPLETE trial from ``<directory>/trials/<n>.pt``.

    Returns
    -------
    model : nn.Module
        The registry module with the trial's best weights, in eval mode on CPU.
    config : dataclass
        Its model config (``spec.config_cls``).
    hyper : dict
        Its hyperparameters, pinned and sampled.
    """
    path = _trial_path(Path(directory), trial_number)
    if not path.is_file():
        raise FileNotFoundError(
            f"no saved model for trial {trial_number}: {path} does not exist "
            "(only COMPLETE trials save weights)"
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    spec = get_spec(payload["model"])
    config = spec.config_cls(**payload["config"])
    model = spec.build(config)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, config, dict(payload["hyper"])
