"""Models trained inside a brand: numpy logistic regression (plain, FedProx, DP-SGD) and XGBoost.

Logistic regression parameters travel as an ``ArrayRecord`` with two arrays, ``w`` (d,) and
``b`` (1,), float32.  XGBoost travels as Flower's XGBoost strategies expect: one uint8 array
(key ``"0"``) holding the booster's JSON bytes.

DP-SGD (record-level DP inside a brand): every step samples each training row independently
with probability ``q`` (Poisson subsampling), clips each sampled row's gradient to L2 norm
``C``, sums, adds Gaussian noise N(0, (sigma*C)^2) per coordinate and divides by the expected
batch ``q*n``.  The L2 and FedProx terms do not touch data and are added unnoised.  The noise
multiplier sigma is calibrated by :func:`privacy.dp.calibrate_noise_multiplier` so that the
brand's whole run (all rounds) stays within the target (epsilon, delta); one row is one member.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

HIST_BINS = 100


# --------------------------------------------------------------------------- metrics


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC with tie handling (Mann-Whitney, tied scores share their mean rank), NaN if only one
    class is present."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(p, dtype=np.float64), return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each distinct score
    ranks = mean_rank[inverse.reshape(-1)]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def score_histograms(y: np.ndarray, p: np.ndarray, bins: int = HIST_BINS) -> tuple[list[int], list[int]]:
    """Counts of positives and negatives per score bin: an aggregate a brand may share."""
    idx = np.clip((np.asarray(p) * bins).astype(int), 0, bins - 1)
    y = np.asarray(y).astype(bool)
    pos = np.bincount(idx[y], minlength=bins)
    neg = np.bincount(idx[~y], minlength=bins)
    return [int(v) for v in pos], [int(v) for v in neg]


def noisy_histograms(pos: list[int], neg: list[int], epsilon: float) -> tuple[list[float], list[float]]:
    """The histograms with Laplace noise of scale 1/epsilon on every bin: epsilon-DP for the member
    (adding or removing one moves one count of one bin by one). Unclipped, so sums stay unbiased;
    the noise is drawn from the operating system's entropy, which the operator cannot replay."""
    rng = np.random.default_rng()
    scale = 1.0 / epsilon
    return ([float(v) for v in np.asarray(pos) + rng.laplace(0.0, scale, len(pos))],
            [float(v) for v in np.asarray(neg) + rng.laplace(0.0, scale, len(neg))])


def noisy_count(n: int, epsilon: float) -> float:
    """A count with Laplace noise of scale 1/epsilon (epsilon-DP for the member), at least 1."""
    return float(max(1.0, n + np.random.default_rng().laplace(0.0, 1.0 / epsilon)))


def auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC of pooled scores from summed per-bin counts (ties within a bin count one half)."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos <= 0 or n_neg <= 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    # Noisy counts (noisy_histograms) may push the estimate a little outside [0, 1].
    return float(np.clip((np.sum(pos * neg_below) + 0.5 * np.sum(pos * neg)) / (n_pos * n_neg), 0.0, 1.0))


# --------------------------------------------------------------------------- logistic regression


def lr_init(dim: int) -> dict[str, np.ndarray]:
    return {"w": np.zeros(dim, dtype=np.float32), "b": np.zeros(1, dtype=np.float32)}


def lr_predict(params: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    return sigmoid(X.astype(np.float64) @ params["w"].astype(np.float64) + float(params["b"][0]))


@dataclass(frozen=True)
class DPSGD:
    """Record-level DP-SGD settings of one brand for one round."""

    noise_multiplier: float
    clip: float
    sample_rate: float
    steps: int


def dp_steps_per_round(local_epochs: int, sample_rate: float) -> int:
    return max(1, int(math.ceil(local_epochs / sample_rate)))


def dp_sample_rate(expected_batch: int, n: int) -> float:
    return min(1.0, float(expected_batch) / float(n))


def lr_train(
    params: dict[str, np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    l2: float,
    proximal_mu: float = 0.0,
    dp: DPSGD | None = None,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], float]:
    """Local training from ``params`` (which are also the FedProx anchor). Returns (params, loss)."""
    X64 = X.astype(np.float64)
    yf = y.astype(np.float64)
    n, d = X64.shape
    w0 = params["w"].astype(np.float64).copy()
    b0 = float(params["b"][0])
    w, b = w0.copy(), b0

    def reg_grad(w_: np.ndarray, b_: float) -> tuple[np.ndarray, float]:
        gw = l2 * w_ + proximal_mu * (w_ - w0)
        gb = proximal_mu * (b_ - b0)
        return gw, gb

    if dp is None:
        for _ in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                err = sigmoid(X64[idx] @ w + b) - yf[idx]
                gw, gb = reg_grad(w, b)
                w -= lr * (X64[idx].T @ err / len(idx) + gw)
                b -= lr * (err.mean() + gb)
    else:
        expected = dp.sample_rate * n
        for _ in range(dp.steps):
            idx = np.flatnonzero(rng.random(n) < dp.sample_rate)
            gsum_w = np.zeros(d)
            gsum_b = 0.0
            if len(idx):
                err = sigmoid(X64[idx] @ w + b) - yf[idx]
                # per-example gradient of [w, b] is err_i * [x_i, 1]; its norm is |err_i| * ||[x_i, 1]||
                norms = np.abs(err) * np.sqrt((X64[idx] ** 2).sum(axis=1) + 1.0)
                factor = err / np.maximum(1.0, norms / dp.clip)
                gsum_w = X64[idx].T @ factor
                gsum_b = float(factor.sum())
            noise = rng.normal(0.0, dp.noise_multiplier * dp.clip, d + 1)
            gw, gb = reg_grad(w, b)
            w -= lr * ((gsum_w + noise[:d]) / expected + gw)
            b -= lr * ((gsum_b + noise[d]) / expected + gb)
    new = {"w": w.astype(np.float32), "b": np.asarray([b], dtype=np.float32)}
    return new, log_loss(yf, lr_predict(new, X))


def lr_fit_centralized(
    X: np.ndarray, y: np.ndarray, *, epochs: int = 60, lr: float = 0.1, batch_size: int = 32, l2: float = 1e-4, seed: int = 0
) -> dict[str, np.ndarray]:
    """Trained on these rows alone from ``seed``: a brand's local-only model, or on pooled rows the centralized yardstick."""
    params = lr_init(X.shape[1])
    params, _ = lr_train(params, X, y, epochs=epochs, lr=lr, batch_size=batch_size, l2=l2, rng=np.random.default_rng(seed))
    return params


# --------------------------------------------------------------------------- xgboost


def xgb_params(eta: float, max_depth: int, seed: int) -> dict:
    return {
        "objective": "binary:logistic",
        "eta": eta,
        "max_depth": max_depth,
        "eval_metric": "auc",
        "tree_method": "hist",
        "nthread": 1,
        "base_score": 0.5,
        "seed": seed,
        "subsample": 0.9,
    }


def xgb_local_round(
    global_bytes: bytes, X: np.ndarray, y: np.ndarray, *, local_rounds: int, params: dict, return_only_new: bool
) -> bytes:
    """Boost ``local_rounds`` trees on the brand's rows starting from the global model.

    Bagging returns only the new trees (the server appends them); cyclic returns the whole model.
    """
    import xgboost as xgb

    dtrain = xgb.DMatrix(X, label=y)
    if not global_bytes:
        bst = xgb.train(params, dtrain, num_boost_round=local_rounds)
        return bytes(bst.save_raw("json"))
    bst = xgb.Booster(params=params)
    bst.load_model(bytearray(global_bytes))
    bst = xgb.train(params, dtrain, num_boost_round=local_rounds, xgb_model=bst)
    if return_only_new:
        total = bst.num_boosted_rounds()
        bst = bst[total - local_rounds : total]
    return bytes(bst.save_raw("json"))


def xgb_predict(model_bytes: bytes, X: np.ndarray) -> np.ndarray:
    import xgboost as xgb

    if not model_bytes:
        return np.full(X.shape[0], 0.5)
    bst = xgb.Booster()
    bst.load_model(bytearray(model_bytes))
    return bst.predict(xgb.DMatrix(X))


def xgb_fit_centralized(X: np.ndarray, y: np.ndarray, *, rounds: int, params: dict) -> bytes:
    import xgboost as xgb

    return bytes(xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=rounds).save_raw("json"))


# --------------------------------------------------------------------------- serialisation


def serialise_logreg(params: dict[str, np.ndarray], feature_names: list[str] | None = None) -> bytes:
    """Canonical JSON of a logistic-regression release (the bytes that get hashed)."""
    doc = {
        "format": "alliance.logreg/1",
        "b": [float(v) for v in np.asarray(params["b"], dtype=np.float32)],
        "w": [float(v) for v in np.asarray(params["w"], dtype=np.float32)],
        "feature_names": feature_names,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def deserialise_logreg(blob: bytes) -> dict[str, np.ndarray]:
    doc = json.loads(blob)
    return {"w": np.asarray(doc["w"], dtype=np.float32), "b": np.asarray(doc["b"], dtype=np.float32)}


def sha256_hex(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()
