"""Temporal Fusion Transformer building blocks shared by the sequence models.

The blocks follow Lim, Arik, Loeff & Pfister (2021), "Temporal Fusion Transformers for
interpretable multi-horizon time series forecasting" (the TFT paper), in the form the
Momentum Transformer (Wood, Giegerich, Roberts & Zohren 2022) uses them:

* :class:`GatedLinearUnit`: GLU, TFT eq. (5).
* :class:`GateAddNorm`: GLU, residual add, LayerNorm (the "Add & Norm" boxes of TFT Fig. 2).
* :class:`GatedResidualNetwork`: GRN, TFT eqs. (2)-(4).
* :class:`VariableSelectionNetwork`: VSN, TFT eqs. (6)-(8).
* :class:`InterpretableMultiHeadAttention`: TFT eqs. (13)-(16), causal.

and one input helper of the DMN paper's window models (Lim, Zohren & Roberts 2019):

* :func:`causal_window`: the last tau steps' features concatenated at every step.

Initialisation follows the tf.keras defaults of the authors' reference code: glorot-uniform
kernels, zero biases, orthogonal recurrent kernels, LSTM forget-gate bias 1, LayerNorm
epsilon 1e-3, embeddings uniform in [-0.05, 0.05]. The helpers at the top of the module
apply these defaults and are reused by ``dmn.py`` and ``tft.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# tf.keras LayerNormalization default epsilon (PyTorch's default is 1e-5).
LAYER_NORM_EPS = 1e-3
# tf.keras `Embedding` default initialiser: RandomUniform(-0.05, 0.05).
KERAS_EMBEDDING_LIMIT = 0.05
# tf.keras `backend.epsilon()`, used by the `max_norm` constraint's denominator.
KERAS_EPSILON = 1e-7


# ---------------------------------------------------------------------------------------------
# tf.keras-default initialisation and constraints
# ---------------------------------------------------------------------------------------------


def keras_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """An ``nn.Linear`` initialised like a tf.keras ``Dense`` layer.

    Parameters
    ----------
    in_features, out_features : int
        Input and output sizes; the weight has shape ``(out_features, in_features)``.
    bias : bool
        Whether the layer has a bias (zero-initialised).

    Returns
    -------
    nn.Linear
        Glorot-uniform weight (limit ``sqrt(6 / (in + out))``), zero bias.
    """
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


@torch.no_grad()
def init_keras_lstm_(lstm: nn.LSTM) -> None:
    """Initialise an ``nn.LSTM`` in place like a tf.keras ``LSTM`` layer.

    Keras uses glorot-uniform input kernels (over the whole ``(in, 4 * hidden)`` kernel),
    an orthogonal recurrent kernel ``(hidden, 4 * hidden)`` and ``unit_forget_bias=True``.
    PyTorch stores the transposes, ``weight_ih (4 * hidden, in)`` and
    ``weight_hh (4 * hidden, hidden)``, whose glorot limits are the same and whose
    orthogonality reads ``weight_hh.T @ weight_hh = I``. PyTorch has two bias vectors
    (``b_ih`` and ``b_hh``) that are summed, so the forget-gate 1 goes on ``b_ih`` only; the
    gate order is (input, forget, cell, output).

    Parameters
    ----------
    lstm : nn.LSTM
        Any number of layers; every layer is initialised.
    """
    hidden = lstm.hidden_size
    for name, param in lstm.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.xavier_uniform_(param)
        elif name.startswith("weight_hh"):
            nn.init.orthogonal_(param)
        elif name.startswith("bias"):
            nn.init.zeros_(param)
            if name.startswith("bias_ih"):
                param[hidden : 2 * hidden] = 1.0  # forget-gate slice


def init_keras_embedding_(embedding: nn.Embedding) -> None:
    """Initialise an ``nn.Embedding`` in place like tf.keras: uniform in [-0.05, 0.05]."""
    nn.init.uniform_(embedding.weight, -KERAS_EMBEDDING_LIMIT, KERAS_EMBEDDING_LIMIT)


@torch.no_grad()
def max_norm_(weight: Tensor, max_value: float = 3.0) -> None:
    """Project a Linear weight in place like ``keras.constraints.max_norm(max_value)``.

    A Keras Dense kernel is ``(in, out)`` and max-norm bounds the L2 norm of each output
    unit's incoming weights (axis 0). ``nn.Linear.weight`` is ``(out, in)``, so the norm is
    over dim 1. Keras's formula ``w * clip(n, 0, m) / (eps + n)`` is kept exactly, including
    its tiny shrink (factor ``n / (n + 1e-7)``) of rows already inside the ball.

    Parameters
    ----------
    weight : Tensor
        ``(out_features, in_features)``, modified in place.
    max_value : float
        Largest allowed L2 norm of a row.
    """
    norms = weight.norm(dim=1, keepdim=True)  # (out, 1)
    weight.mul_(norms.clamp(max=max_value) / (norms + KERAS_EPSILON))


# ---------------------------------------------------------------------------------------------
# Causal input windows
# ---------------------------------------------------------------------------------------------


def causal_window(x: Tensor, tau: int, *, last_only: bool = False) -> Tensor:
    """The input vector ``u_{t-tau:t}`` of the DMN paper's Lasso and MLP, at every step.

    Lim, Zohren & Roberts (2019), section IV-A: the inputs of the past tau days are
    concatenated into one vector, oldest first. Step ``s`` gets
    ``[x_{s-tau+1}, ..., x_s]``, feature ``f`` of lag ``j`` (0 = oldest of the window) at
    position ``j * n_features + f``. Steps before the start of the sequence are zeros: the
    first ``tau - 1`` steps of a sequence see zero-padded history, the last step of a window
    of at least tau steps (what serving reads) sees the full tau steps.

    Parameters
    ----------
    x : Tensor
        ``(batch, seq, n_features)``, oldest step first.
    tau : int
        Steps per window.
    last_only : bool
        Only the last step's window.

    Returns
    -------
    Tensor
        ``(batch, seq, tau * n_features)``, or ``(batch, 1, tau * n_features)`` with
        `last_only`.
    """
    padded = F.pad(x, (0, 0, tau - 1, 0))  # (batch, tau - 1 + seq, features): zeros first
    if last_only:
        return padded[:, -tau:].flatten(1).unsqueeze(1)  # (batch, 1, tau * features)
    seq = x.shape[1]
    # slice j holds lag tau - 1 - j of every step: x_{s - tau + 1 + j} at step s
    lags = [padded[:, j : j + seq] for j in range(tau)]  # tau x (batch, seq, features)
    return torch.cat(lags, dim=-1)  # (batch, seq, tau * features)


# ---------------------------------------------------------------------------------------------
# Gating blocks
# ---------------------------------------------------------------------------------------------


class GatedLinearUnit(nn.Module):
    """Gated linear unit, TFT eq. (5): ``GLU(g) = sigmoid(W4 g + b4) * (W5 g + b5)``.

    Dropout (if any) is applied to the input, before both projections, as in the authors'
    ``apply_gating_layer``.

    Parameters
    ----------
    input_size, output_size : int
        Sizes of the last dimension in and out.
    dropout : float
        Dropout rate on the input; 0 disables it.
    """

    def __init__(self, input_size: int, output_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.value = keras_linear(input_size, output_size)  # W5, b5
        self.gate = keras_linear(input_size, output_size)  # W4, b4

    def forward(self, x: Tensor) -> Tensor:
        """``(..., input_size) -> (..., output_size)``."""
        x = self.dropout(x)
        return torch.sigmoid(self.gate(x)) * self.value(x)


class GateAddNorm(nn.Module):
    """``LayerNorm(residual + GLU(x))``: the gated skip connection of the TFT (eq. 2 form).

    Parameters
    ----------
    input_size : int
        Last dimension of ``x``.
    output_size : int
        Last dimension of ``residual`` and of the output.
    dropout : float
        Dropout rate inside the GLU (on ``x``).
    """

    def __init__(self, input_size: int, output_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.glu = GatedLinearUnit(input_size, output_size, dropout)
        self.norm = nn.LayerNorm(output_size, eps=LAYER_NORM_EPS)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        """``x (..., input_size)``, ``residual (..., output_size)`` -> ``(..., output_size)``."""
        return self.norm(residual + self.glu(x))


class GatedResidualNetwork(nn.Module):
    """Gated residual network, TFT eqs. (2)-(4).

    ``eta2 = ELU(W2 a + W3 c + b2)`` (eq. 4; the context term only when ``c`` is given),
    ``eta1 = W1 eta2 + b1`` (eq. 3), ``GRN(a, c) = LayerNorm(skip(a) + GLU(eta1))`` (eq. 2),
    where ``skip`` is the identity when input and output sizes agree and a linear projection
    otherwise. Dropout sits inside the GLU, on ``eta1``, as in the reference code.

    Parameters
    ----------
    input_size : int
        Last dimension of ``a``.
    hidden_size : int
        Size of ``eta1`` and ``eta2``.
    output_size : int or None
        Last dimension of the output; ``None`` means ``hidden_size``.
    context_size : int or None
        Last dimension of the optional static context ``c``; ``None`` means the GRN takes no
        context.
    dropout : float
        Dropout rate inside the GLU.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int | None = None,
        context_size: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        output_size = hidden_size if output_size is None else output_size
        self.skip: nn.Module = (
            nn.Identity() if input_size == output_size else keras_linear(input_size, output_size)
        )
        self.fc2 = keras_linear(input_size, hidden_size)  # W2, b2
        # W3: the reference adds the context through a bias-free Dense.
        self.context = (
            None if context_size is None else keras_linear(context_size, hidden_size, bias=False)
        )
        self.elu = nn.ELU()
        self.fc1 = keras_linear(hidden_size, hidden_size)  # W1, b1
        self.gate_add_norm = GateAddNorm(hidden_size, output_size, dropout)

    def forward(self, a: Tensor, context: Tensor | None = None) -> Tensor:
        """Apply the GRN.

        Parameters
        ----------
        a : Tensor
            ``(..., input_size)``.
        context : Tensor or None
            ``(..., context_size)``, broadcastable against ``a``'s leading dimensions, e.g.
            ``(batch, 1, context_size)`` for a static context over ``(batch, seq, input)``.

        Returns
        -------
        Tensor
            ``(..., output_size)``.
        """
        eta2 = self.fc2(a)
        if context is not None:
            if self.context is None:
                raise ValueError(
                    "`context` was given to a GatedResidualNetwork built without `context_size`"
                )
            eta2 = eta2 + self.context(context)  # eq. (4): W3 c
        eta2 = self.elu(eta2)
        eta1 = self.fc1(eta2)  # eq. (3)
        return self.gate_add_norm(eta1, self.skip(a))  # eq. (2)


# ---------------------------------------------------------------------------------------------
# Variable selection
# ---------------------------------------------------------------------------------------------


class VariableSelectionNetwork(nn.Module):
    """Variable selection network over real-valued inputs, TFT eqs. (6)-(8).

    Each scalar input ``x_j`` is embedded to ``xi_j = x_j w_j + b_j`` (a per-variable
    ``Dense(hidden)``, as the reference's ``convert_real_to_embedding``). Selection weights
    ``v = Softmax(GRN_v(Xi, c_s))`` come from one GRN over the flattened embeddings
    ``Xi = [xi_1, ..., xi_m]`` with the optional static context (eq. 6); each embedding is
    processed by its own GRN, ``xi~_j = GRN_j(xi_j)`` (eq. 7); the output is the weighted sum
    ``sum_j v_j xi~_j`` (eq. 8).

    Parameters
    ----------
    n_variables : int
        Number of scalar inputs ``m`` (last dimension of ``x``).
    hidden_size : int
        Embedding and output size.
    context_size : int or None
        Size of the static context; ``None`` for no context.
    dropout : float
        Dropout rate inside every GRN.
    """

    def __init__(
        self,
        n_variables: int,
        hidden_size: int,
        context_size: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        # One Dense(1 -> hidden) per variable, stored as rows: weight[j] is variable j's kernel.
        self.embed_weight = nn.Parameter(torch.empty(n_variables, hidden_size))
        self.embed_bias = nn.Parameter(torch.zeros(n_variables, hidden_size))
        # Glorot limit of each (1, hidden) Dense kernel: fan_in 1, fan_out hidden.
        limit = math.sqrt(6.0 / (1 + hidden_size))
        nn.init.uniform_(self.embed_weight, -limit, limit)
        self.weights_grn = GatedResidualNetwork(
            n_variables * hidden_size,
            hidden_size,
            output_size=n_variables,
            context_size=context_size,
            dropout=dropout,
        )
        self.variable_grns = nn.ModuleList(
            GatedResidualNetwork(hidden_size, hidden_size, dropout=dropout)
            for _ in range(n_variables)
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Select and combine variables.

        Parameters
        ----------
        x : Tensor
            ``(..., n_variables)``, e.g. ``(batch, seq, n_variables)``.
        context : Tensor or None
            ``(..., context_size)`` broadcastable against ``x``'s leading dimensions, e.g.
            ``(batch, 1, context_size)``.

        Returns
        -------
        selected : Tensor
            ``(..., hidden_size)``, the weighted combination (eq. 8).
        weights : Tensor
            ``(..., n_variables)``, softmax selection weights (eq. 6), summing to 1.
        """
        embeddings = x.unsqueeze(-1) * self.embed_weight + self.embed_bias  # (..., vars, hidden)
        flat = embeddings.flatten(start_dim=-2)  # (..., vars * hidden)
        weights = torch.softmax(self.weights_grn(flat, context), dim=-1)  # (..., vars), eq. (6)
        processed = torch.stack(
            [grn(embeddings[..., j, :]) for j, grn in enumerate(self.variable_grns)], dim=-2
        )  # (..., vars, hidden), eq. (7)
        selected = (weights.unsqueeze(-1) * processed).sum(dim=-2)  # (..., hidden), eq. (8)
        return selected, weights


# ---------------------------------------------------------------------------------------------
# Interpretable attention
# ---------------------------------------------------------------------------------------------


class InterpretableMultiHeadAttention(nn.Module):
    """Causal interpretable multi-head self-attention, TFT eqs. (13)-(16).

    Each head ``h`` has its own query and key projections ``W_Q^(h), W_K^(h)``; ONE value
    projection ``W_V`` is shared by all heads, so the heads' outputs live in the same space
    and can be averaged (eq. 16) instead of concatenated:
    ``H~ = (1/m_H) sum_h A(Q W_Q^(h), K W_K^(h)) V W_V`` (eq. 15) and the output is
    ``H~ W_H`` (eq. 14). ``A`` is scaled dot-product attention (eq. 10) under a causal mask,
    so step ``s`` attends only to steps ``<= s``. The returned attention pattern is the
    head average ``(1/m_H) sum_h A_h``, the quantity the TFT paper interprets.

    As in the reference code: per-head size ``d = hidden // heads`` (floor, so e.g. hidden 5
    with 4 heads gives d = 1), no biases on the projections, dropout on each head's output
    and on the final output, none on the attention probabilities. The per-head projections
    are packed into one matrix for speed; each head's block is glorot-initialised on its own,
    as each head's ``Dense(d)`` is in the reference.

    Parameters
    ----------
    hidden_size : int
        Model size ``d_model`` (last dimension in and out).
    heads : int
        Number of heads ``m_H``; must not exceed ``hidden_size``.
    dropout : float
        Dropout rate on head outputs and on the final output.
    """

    def __init__(self, hidden_size: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not 1 <= heads <= hidden_size:
            raise ValueError(f"`heads` must be in [1, hidden_size={hidden_size}], got {heads}")
        self.heads = heads
        self.head_size = hidden_size // heads
        self.query = nn.Linear(hidden_size, heads * self.head_size, bias=False)
        self.key = nn.Linear(hidden_size, heads * self.head_size, bias=False)
        with torch.no_grad():
            for packed in (self.query.weight, self.key.weight):
                for block in packed.view(heads, self.head_size, hidden_size):
                    nn.init.xavier_uniform_(block)  # per-head Dense(d) glorot limit
        self.value = keras_linear(hidden_size, self.head_size, bias=False)  # shared W_V
        self.out = keras_linear(self.head_size, hidden_size, bias=False)  # W_H
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, *, last_only: bool = False) -> tuple[Tensor, Tensor]:
        """Causal self-attention over the sequence.

        Parameters
        ----------
        x : Tensor
            ``(batch, seq, hidden_size)``; queries, keys and values all come from ``x``.
        last_only : bool
            Only the last step queries (``q = 1`` below; keys and values still span the
            whole sequence): the row that serving needs, without the ``seq x seq`` scores.

        Returns
        -------
        output : Tensor
            ``(batch, q, hidden_size)`` with ``q = seq``, or 1 with `last_only`.
        attention : Tensor
            ``(batch, q, seq)``, weights averaged over heads; row ``s`` is the distribution
            over key steps for query step ``s`` (zero above the diagonal, rows sum to 1).
        """
        queries = x[:, -1:] if last_only else x
        # (batch, q, heads, d) -> (batch, heads, q, d)
        q = self.query(queries).unflatten(-1, (self.heads, self.head_size)).transpose(1, 2)
        # (batch, seq, heads, d) -> (batch, heads, seq, d)
        k = self.key(x).unflatten(-1, (self.heads, self.head_size)).transpose(1, 2)
        v = self.value(x).unsqueeze(1)  # (batch, 1, seq, d): shared by every head

        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_size)  # (batch, heads, q, seq)
        if not last_only:  # the last step sees the whole window: nothing lies in its future
            # True means "masked out": key step j lies in the future of query step i (j > i).
            # Built from the runtime scores so the sequence length stays dynamic in ONNX.
            is_future = torch.triu(torch.ones_like(scores[0, 0], dtype=torch.bool), diagonal=1)
            # The diagonal is never masked: every row keeps a finite entry, softmax is safe.
            scores = scores.masked_fill(is_future, float("-inf"))
        attention = torch.softmax(scores, dim=-1)  # (batch, heads, q, seq), eq. (10)

        per_head = self.dropout(attention @ v)  # (batch, heads, q, d)
        averaged = per_head.mean(dim=1)  # (batch, q, d), eq. (15)-(16)
        output = self.dropout(self.out(averaged))  # (batch, q, hidden), eq. (14)
        return output, attention.mean(dim=1)


def check_positive_int(name: str, value: object) -> None:
    """A config field that must be a positive integer (bools refused), named in the error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


def check_sequence_input(x: Tensor, n_features: int) -> None:
    """The "sequence" layout's input: ``(batch, seq, n_features)``, or an error saying so."""
    if x.dim() != 3 or x.shape[-1] != n_features:
        raise ValueError(f"`x` must have shape (batch, seq, {n_features}), got {tuple(x.shape)}")
