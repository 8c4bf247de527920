"""The DMN paper's Lasso, MLP and WaveNet (Lim, Zohren & Roberts 2019, section IV-A).

Shapes, range, gradients, causality, the windows each step reads (the Lasso's tau = 5, the
WaveNet's weekly / monthly / quarterly receptive field as its equations give it), the serving
path, the L1 penalty, dropout placement, training under every objective and ONNX parity.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from momentum.data import synthetic_prices
from momentum.features import compute_features
from training.datasets import ModelData, SequenceLayout, label_rows
from training.export import SequenceServing, export_onnx, onnx_session, serving_module
from training.models import REGISTRY, Universe, lasso, mlp_dmn, wavenet
from training.models.grids import DMN_TFT_CAPACITY, DMN_TFT_OPTIMISATION, STMOM_L1
from training.train import TrainConfig, fit, layout_for, train, validation_loss

NAMES = ["lasso", "mlp_dmn", "wavenet"]
MODULES = {"lasso": lasso, "mlp_dmn": mlp_dmn, "wavenet": wavenet}
BATCH, N_FEATURES = 3, 8
TAU = 5  # section V: the Lasso's and the MLP's window

# The WaveNet's equations (section IV-A), lag by lag: the weekly layer reads u at lags 0..4;
# the monthly layer the weekly states at lags 0, 5, 10, 15; the quarterly layer the monthly
# states at lags 0, 21, 42. The output reads the three states at lag 0, so the input lags
# reaching it are every sum of one lag of each layer.
WEEKLY_LAGS = range(5)
MONTHLY_TAPS = (0, 5, 10, 15)
QUARTERLY_TAPS = (0, 21, 42)
WAVENET_LAGS = frozenset(
    w + m + q for w in WEEKLY_LAGS for m in MONTHLY_TAPS for q in QUARTERLY_TAPS
)
LAGS_READ = {
    "lasso": frozenset(range(TAU)),
    "mlp_dmn": frozenset(range(TAU)),
    "wavenet": WAVENET_LAGS,
}
LONG = 70  # longer than the WaveNet's receptive field


def _model(name: str, *, far_from_init: bool = True, **overrides: object) -> nn.Module:
    """The tiny model in eval mode; weights moved away from init, as after training."""
    torch.manual_seed(0)
    model = REGISTRY[name].build(REGISTRY[name].tiny(**overrides)).eval()
    if far_from_init:
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.5 * torch.randn_like(param))
    return model


def _features(seq: int, batch: int = BATCH, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, seq, N_FEATURES, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# shapes, range, gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seq", [1, 4, 5, LONG])
def test_shape_and_range(name: str, seq: int) -> None:
    model = _model(name)
    with torch.no_grad():
        out = model(10.0 * _features(seq), torch.zeros(BATCH, dtype=torch.int64))
    assert out.shape == (BATCH, seq)
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    model = _model(name, far_from_init=False)
    out = model(_features(LONG))
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    silent = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not silent, f"{name}: no gradient reaches {silent}"


@pytest.mark.parametrize("name", NAMES)
def test_rejects_wrong_feature_count(name: str) -> None:
    with pytest.raises(ValueError, match=r"`x` must have shape \(batch, seq, 8\)"):
        _model(name)(torch.zeros(2, 10, 7))


# ---------------------------------------------------------------------------------------------
# causality and the window of each step
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("step", [0, 3, 30, LONG - 2])
def test_causality(name: str, step: int) -> None:
    model = _model(name)
    x = _features(LONG)
    changed = x.clone()
    changed[:, step + 1 :] = 3.0 * torch.randn_like(changed[:, step + 1 :])
    with torch.no_grad():
        before, after = model(x), model(changed)
    torch.testing.assert_close(after[:, : step + 1], before[:, : step + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, step + 1], before[:, step + 1])


def _lags_read(model: nn.Module, step: int, seq: int = LONG) -> set[int]:
    """Lags ``step - j`` of the input steps j with a non-zero gradient on the output at `step`."""
    x = _features(seq).requires_grad_(True)
    model(x)[:, step].sum().backward()
    assert x.grad is not None
    reached = x.grad.abs().sum(dim=(0, 2)) > 0  # (seq,)
    return {step - j for j in range(seq) if reached[j]}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("step", [2, 4, 25, 45, LONG - 1])
def test_each_step_reads_exactly_its_window(name: str, step: int) -> None:
    # before the start of the sequence there is nothing to read (zero-padded history)
    expected = {lag for lag in LAGS_READ[name] if lag <= step}
    assert _lags_read(_model(name), step) == expected


def test_the_lasso_window_is_the_last_five_steps() -> None:
    model = _model("lasso")
    assert _lags_read(model, LONG - 1) == {0, 1, 2, 3, 4}  # step s ignores steps < s - 4
    assert model.receptive_field == TAU


def test_the_wavenet_receptive_field_follows_its_equations() -> None:
    # lags 0-19 (a month of four 5-day weeks), 21-40 and 42-61: months are 21 days apart, so
    # lags 20 and 41 fall between them; 62 steps back to the oldest, t included
    assert (
        max(WAVENET_LAGS) + 1 == 62 == wavenet.RECEPTIVE_FIELD == _model("wavenet").receptive_field
    )
    assert set(range(62)) - WAVENET_LAGS == {20, 41}
    assert len(WAVENET_LAGS) == 60


def test_the_lasso_is_tanh_of_a_linear_model_of_the_concatenated_window() -> None:
    model = _model("lasso")
    x = _features(8)
    w = model.linear.weight.detach()[0].numpy().astype(np.float64)  # (tau * features,)
    b = float(model.linear.bias.detach()[0])
    padded = np.concatenate([np.zeros((BATCH, TAU - 1, N_FEATURES)), x.numpy()], axis=1)
    with torch.no_grad():
        out = model(x).numpy()
    for s in range(x.shape[1]):
        u = padded[:, s : s + TAU].reshape(BATCH, -1)  # x_{s-4}, ..., x_s, oldest first
        np.testing.assert_allclose(out[:, s], np.tanh(u @ w + b), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seq", [1, 4, TAU, 30, 62, LONG])
def test_last_only_is_the_last_column(name: str, seq: int) -> None:
    model = _model(name, dropout=0.3) if name != "lasso" else _model(name)
    x = 3.0 * _features(seq)
    with torch.no_grad():
        full, last = model(x), model(x, last_only=True)
    assert last.shape == (BATCH, 1)
    torch.testing.assert_close(last, full[:, -1:], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["lasso", "mlp_dmn"])
def test_a_serving_window_of_tau_steps_sees_them_all(name: str) -> None:
    # the last step of a 5-step window reads no padding: prepending history changes nothing
    model = _model(name)
    window = _features(TAU)
    longer = torch.cat([_features(20, seed=9), window], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(
            model(window, last_only=True), model(longer, last_only=True), rtol=0, atol=1e-6
        )


# ---------------------------------------------------------------------------------------------
# regularisation: L1 penalty, dropout
# ---------------------------------------------------------------------------------------------


def test_lasso_penalty_is_alpha_times_the_l1_norm_of_w() -> None:
    model = lasso.Lasso(lasso.tiny(alpha=0.25))
    n = TAU * N_FEATURES
    with torch.no_grad():
        model.linear.weight.copy_(torch.linspace(-1.0, 2.0, n).reshape(1, n))
        model.linear.bias.fill_(-7.0)  # not penalised
    expected = 0.25 * float(np.abs(np.linspace(-1.0, 2.0, n)).sum())
    assert float(model.penalty().detach()) == pytest.approx(expected, rel=1e-6)
    assert float(lasso.Lasso(lasso.tiny(alpha=0.0)).penalty().detach()) == 0.0


def test_only_the_lasso_is_penalised() -> None:
    assert not hasattr(_model("mlp_dmn"), "penalty")
    assert not hasattr(_model("wavenet"), "penalty")


def _recorded_dropout_inputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple]]:
    calls: list[tuple[str, tuple]] = []
    hooks = [
        module.register_forward_hook(
            lambda mod, args, out, name=name: calls.append((name, tuple(args[0].shape)))
        )
        for name, module in model.named_modules()
        if isinstance(module, nn.Dropout)
    ]
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def test_dropout_placement() -> None:
    seq, hidden = 11, 6
    x = _features(seq)
    # MLP (section IV-B): on the inputs (the concatenated window) and the hidden state
    mlp = mlp_dmn.MlpDmn(mlp_dmn.tiny(hidden=hidden, dropout=0.5)).train()
    assert _recorded_dropout_inputs(mlp, x) == [
        ("input_dropout", (BATCH, seq, TAU * N_FEATURES)),
        ("hidden_dropout", (BATCH, seq, hidden)),
    ]
    # WaveNet (section IV-B): the inputs of the three convolutional layers, their outputs
    net = wavenet.WaveNet(wavenet.tiny(hidden=hidden, dropout=0.5)).train()
    assert _recorded_dropout_inputs(net, x) == [
        ("input_dropout", (BATCH, N_FEATURES, seq)),
        ("input_dropout", (BATCH, hidden, seq)),
        ("input_dropout", (BATCH, hidden, seq)),
        ("output_dropout", (BATCH, seq, 3 * hidden)),
    ]
    assert not any(isinstance(m, nn.Dropout) for m in _model("lasso").modules())
    # dropout acts in training only
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))
        net.eval()
        assert torch.equal(net(x), net(x))


# ---------------------------------------------------------------------------------------------
# configs, grids, initialisation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config_cls", "field", "value"),
    [
        (lasso.LassoConfig, "tau", 0),
        (lasso.LassoConfig, "alpha", -1e-3),
        (lasso.LassoConfig, "alpha", math.inf),
        (lasso.LassoConfig, "n_features", 2.0),
        (mlp_dmn.MlpDmnConfig, "hidden", 0),
        (mlp_dmn.MlpDmnConfig, "dropout", 1.0),
        (mlp_dmn.MlpDmnConfig, "tau", True),
        (wavenet.WaveNetConfig, "hidden", -3),
        (wavenet.WaveNetConfig, "dropout", -0.1),
    ],
)
def test_config_validation_names_the_field(config_cls: type, field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        config_cls(**{field: value})


def test_tiny_configs_accept_overrides() -> None:
    assert lasso.tiny(alpha=0.5).alpha == 0.5
    assert mlp_dmn.tiny(hidden=9).hidden == 9
    assert wavenet.tiny(dropout=0.2).dropout == 0.2


def test_defaults_follow_the_paper() -> None:
    assert lasso.LassoConfig().tau == TAU and mlp_dmn.MlpDmnConfig().tau == TAU


def test_grids() -> None:
    # the LSTM DMN's grid (the DMN paper's Appendix B is not available); the Lasso searches
    # alpha over STMOM's L1 values instead of a hidden size and dropout
    assert lasso.SEARCH_SPACE == {"alpha": STMOM_L1, **DMN_TFT_OPTIMISATION}
    assert mlp_dmn.SEARCH_SPACE == {**DMN_TFT_CAPACITY, **DMN_TFT_OPTIMISATION}
    assert wavenet.SEARCH_SPACE == {**DMN_TFT_CAPACITY, **DMN_TFT_OPTIMISATION}
    for name in NAMES:
        spec = REGISTRY[name]
        assert spec.layout == "sequence"
        assert spec.search_space is MODULES[name].SEARCH_SPACE


def test_wavenet_gate_filter_and_skip_kernels_are_each_glorot() -> None:
    # each of W, V, A is a Conv1D kernel of its own: glorot limit sqrt(6 / (k (in + out)))
    net = wavenet.WaveNet(wavenet.WaveNetConfig(hidden=20))
    for layer, (taps, _), n_in in [
        (net.weekly, wavenet.WEEKLY, 8),
        (net.monthly, wavenet.MONTHLY, 20),
        (net.quarterly, wavenet.QUARTERLY, 20),
    ]:
        limit = math.sqrt(6.0 / (taps * (n_in + 20)))
        for kernel in layer.conv.weight.detach().view(3, 20, n_in, taps):
            assert kernel.abs().max() <= limit
            assert kernel.abs().max() > 0.9 * limit  # not the tighter limit of one packed kernel
        assert not layer.bias.detach().any()


# ---------------------------------------------------------------------------------------------
# training under each of the paper's objectives
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def panel() -> dict:
    prices = synthetic_prices(n_assets=4, n_days=450, n_markets=1, seed=3, stagger=False).prices
    f = compute_features(prices)
    return {
        "data": ModelData.from_features(f),
        "universe": Universe.from_market_map(f.tickers, len(f.names)),
        "train": label_rows(320, 420),
        "valid": label_rows(420, 450),
    }


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("loss", ["sharpe", "returns", "mse", "binary"])
def test_trains_under_each_objective(panel: dict, name: str, loss: str) -> None:
    spec = REGISTRY[name]
    config = TrainConfig(
        loss=loss, max_epochs=2, max_steps=4, batch_size=8, seq_len=21, seed=4, device="cpu"
    )
    torch.manual_seed(0)
    model = spec.build(spec.tiny())
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    moved = []

    def record(_: dict) -> None:  # the weights as they stand after each epoch
        moved.append(any(not torch.equal(model.state_dict()[k], v) for k, v in initial.items()))

    layout = layout_for(spec, spec.tiny(), config)
    result = fit(
        model, layout, panel["data"], panel["train"], panel["valid"], config, on_epoch=record
    )
    assert result.stopped in ("max_steps", "max_epochs")
    assert all(
        math.isfinite(r["train_loss"]) and math.isfinite(r["valid_sharpe"]) for r in result.history
    )
    assert moved and all(moved)  # the objective's gradients reached the weights


@pytest.mark.parametrize("name", NAMES)
def test_a_draw_from_the_grid_trains_through_train(panel: dict, name: str) -> None:
    # the random search hands `train` a flat dict: config fields and training settings mixed
    hyper = {key: values[len(values) // 2] for key, values in REGISTRY[name].search_space.items()}
    model_config, result = train(
        name,
        panel["data"],
        panel["universe"],
        panel["train"],
        panel["valid"],
        hyper,
        TrainConfig(max_epochs=1, max_steps=2, seq_len=21, device="cpu"),
    )
    assert all(getattr(model_config, k) == v for k, v in hyper.items() if k in vars(model_config))
    assert result.stopped != "diverged" and len(result.history) == 1


def test_the_training_loss_includes_the_lasso_penalty(panel: dict) -> None:
    layout = SequenceLayout(21)
    config = TrainConfig(loss="mse", device="cpu")
    torch.manual_seed(0)
    penalised = lasso.Lasso(lasso.tiny(alpha=0.1))
    plain = lasso.Lasso(lasso.tiny(alpha=0.0))
    plain.load_state_dict(penalised.state_dict())
    args = (layout, panel["data"], panel["valid"], config)
    gap = validation_loss(penalised, *args) - validation_loss(plain, *args)
    assert gap == pytest.approx(0.1 * float(penalised.linear.weight.detach().abs().sum()), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# serving: the one ONNX contract
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches_torch(name: str, tmp_path) -> None:
    n_assets, lookback = 5, 63  # the default sequence length: the WaveNet's whole field
    model = _model(name)
    assert isinstance(serving_module(name, model, n_assets), SequenceServing)
    path = tmp_path / "model.onnx"
    export_onnx(
        name,
        model,
        n_assets=n_assets,
        lookback=lookback,
        n_features=N_FEATURES,
        path=path,
        parity_batches=(),  # checked here, against the model itself rather than its wrapper
    )
    session = onnx_session(path)
    generator = torch.Generator().manual_seed(5)
    for batch in (1, 256):
        x = torch.randn(batch, n_assets, lookback, N_FEATURES, generator=generator)
        (got,) = session.run(None, {"features": x.numpy()})
        with torch.no_grad():  # every asset's window as one sequence, its last step
            want = model(x.reshape(-1, lookback, N_FEATURES))[:, -1].reshape(batch, n_assets)
        assert got.shape == (batch, n_assets)
        assert np.abs(got - want.numpy()).max() <= 1e-5
