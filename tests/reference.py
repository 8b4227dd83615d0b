"""A slow, obvious float64 oracle of the whole charrnn model forward, in plain numpy.

Written from the equations in the kernel module docstrings (charrnn/kernels/lstm.py,
gru.py, rnn.py) and the architecture in charrnn/model.py's docstring, not from the
model code: one explicit loop over time, one-hot inputs built as real one-hot matrices,
every gate written out by name. Only the parameter layout is shared with the package,
through charrnn.model.flat_views (names embed, Wx{l}, Wh{l}, b{l}, bn{l} for GRU, Wy, by).

Gate orders: LSTM i, f, o, g; GRU r, z, n.
"""

import numpy as np

from charrnn.model import flat_views


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def lstm_step(x, h, c, Wx, Wh, b):
    """a = x Wx + b + h Wh; c' = f c + i g; h' = o tanh(c')."""
    H = h.shape[1]
    a = x @ Wx + b + h @ Wh  # (N, 4H)
    i = sigmoid(a[:, 0 * H:1 * H])
    f = sigmoid(a[:, 1 * H:2 * H])
    o = sigmoid(a[:, 2 * H:3 * H])
    g = np.tanh(a[:, 3 * H:4 * H])
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new


def gru_step(x, h, c, Wx, Wh, b, bn):
    """Reset gate on the recurrent product (cuDNN / PyTorch form):
    r = s(xWx_r + b_r + hWh_r); z = s(xWx_z + b_z + hWh_z);
    n = tanh(xWx_n + b_n + r * (hWh_n + bn)); h' = (1 - z) n + z h."""
    H = h.shape[1]
    gx = x @ Wx + b  # (N, 3H)
    gh = h @ Wh  # (N, 3H)
    r = sigmoid(gx[:, :H] + gh[:, :H])
    z = sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gx[:, 2 * H:] + r * (gh[:, 2 * H:] + bn))
    return (1.0 - z) * n + z * h, c


def rnn_step(x, h, c, Wx, Wh, b):
    """h' = tanh(x Wx + b + h Wh)."""
    return np.tanh(x @ Wx + b + h @ Wh), c


def reference_forward(config, flat, x_ids, y_ids, h0, c0, masks=None):
    """Mean softmax cross-entropy of predicting y_ids from x_ids.

    config: a charrnn ModelConfig; flat: the parameter buffer; x_ids, y_ids (N, T);
    h0, c0 (L, N, H); masks (L, T, N, H) multipliers applied to each layer's output, or
    None. Returns (mean loss, losses (T*N) in time-major order t*N + n, h_final,
    c_final (L, N, H)); c is carried unchanged by GRU and RNN, which have no cell state.
    """
    p = {name: np.asarray(view, np.float64)
         for name, view in flat_views(np.asarray(flat, np.float64), config).items()}
    x_ids, y_ids = np.asarray(x_ids), np.asarray(y_ids)
    N, T = x_ids.shape
    V, L = config.vocab_size, config.layers
    h = [np.array(h0[layer], np.float64) for layer in range(L)]
    c = [np.array(c0[layer], np.float64) for layer in range(L)]
    losses = np.zeros((T, N))
    for t in range(T):
        if config.embed:
            x = p["embed"][x_ids[:, t]]  # (N, E)
        else:
            x = np.eye(V)[x_ids[:, t]]  # (N, V) one-hot rows
        for layer in range(L):
            Wx, Wh, b = p[f"Wx{layer}"], p[f"Wh{layer}"], p[f"b{layer}"]
            if config.cell == "lstm":
                h[layer], c[layer] = lstm_step(x, h[layer], c[layer], Wx, Wh, b)
            elif config.cell == "gru":
                h[layer], c[layer] = gru_step(x, h[layer], c[layer], Wx, Wh, b,
                                              p[f"bn{layer}"])
            else:
                h[layer], c[layer] = rnn_step(x, h[layer], c[layer], Wx, Wh, b)
            x = h[layer] if masks is None else h[layer] * masks[layer][t]
        logits = x @ p["Wy"] + p["by"]  # (N, V)
        top = logits.max(axis=1, keepdims=True)
        log_probs = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
        losses[t] = -log_probs[np.arange(N), y_ids[:, t]]
    losses = losses.reshape(T * N)
    return losses.mean(), losses, np.stack(h), np.stack(c)
