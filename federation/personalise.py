"""Personalised models: each brand adapts the released global model on its own consented rows.

One global model cannot carry every brand's own patterns (a cafe's regulars are not an airline's),
and a small brand's own model is noisy. So after the federated rounds every brand mixes the two,
in the proportion its own members call for (the adaptive mixture of APFL, Deng et al. 2020):

    personal log-odds = alpha * global log-odds + (1 - alpha) * local log-odds

where the local model is the brand's own model on its rows alone (``local-logreg`` or ``local-xgb``,
the family that ranks its validation members better; the same passes as a federated run gives a
brand), and ``alpha`` is learnt on validation members: the weights of the two log-odds in a logistic
regression of their labels (stacking), L2-regularised (:data:`STACK_C`), so that on a brand's few
dozen validation members the weights swing less with the noise of a few rows, while a brand with
thousands gets the mixture its data fits. A weight the fit makes negative is zero: the
brand then keeps the global model (``global``) or its local model alone (``local-logreg`` /
``local-xgb``); otherwise it uses ``mixture-<alpha>``. Choosing the best of several fixed candidates
on a few hundred members instead picked whichever one's noise flattered it: on the simulated
alliance and both telco splits, over three draws of the validation members, it lost up to 0.077 AUC
to the brand's best local-only model where the learnt mixture lost at most 0.027.

Validation: a share of the brand's members (``personal-holdout``, picked by a seeded hash of their
ids) never takes part in the federated rounds. The local models are trained on the other members,
so every model is scored on members it never saw (the global model included, which had seen the
rest). The local model is then trained once more on all the brand's rows (exactly the brand's
local-only model). A brand with fewer than ``MIN_VALIDATION`` positives or negatives among its
validation members keeps the global model.

Calibration: one global model carries the alliance's base rate, not the brand's (a contract
carrier's churn rate is a tenth of a prepaid one's). So the personal model's log-odds are rescaled
to the brand's own rate (Platt scaling: a slope and an intercept fitted on the validation members'
scores of the final model, as it will score: a retrained model's intercept is not the validated one's);
ranking within the brand is unchanged, and scores from different brands' models become comparable.

A personal model is a weighted sum of component models' log-odds, calibrated, serialised with the
components inside (``alliance.personal/1``), so a brand scores with it alone. It never leaves the brand: the
operator learns what the brand uses (``alpha``) and the SHA-256 of its model, nothing else.

Record-level DP (``dp-epsilon`` > 0, logistic regression): the adaptation reads member data again,
so its trainings (the local model on the other members, then on all) are DP-SGD of
``personal-epochs`` epochs each, with one noise multiplier calibrated so that the brand's federated
rounds and both trainings compose to at most ``personal-dp-epsilon`` (RDP accountant, each training
counted as passes over all the brand's rows), and there is no calibration (it would read the rows
once more). Without that budget (``personal-dp-epsilon`` <= ``dp-epsilon``) the brand keeps the
global model. XGBoost has no DP-SGD, so ``local-xgb`` is not a component under DP. The mixture's
two weights, fitted on the brand's validation members' scores, are not covered by that epsilon.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from federation import models

FORMAT = "alliance.personal/1"
MIN_VALIDATION = 5  # positives and negatives a brand needs among its validation members to choose at all
LOCALS = ("local-logreg", "local-xgb")
# What a brand can end up using; a mixture is named with its weight on the global model (mixture-0.62).
USES = ("global", *LOCALS, "mixture-<alpha>")
# Inverse L2 strength of the stacking fit (scikit-learn's C, on the summed log-loss): it steadies the
# weights on a few dozen validation members; on thousands the data decides.
STACK_C = 0.1

Component = tuple[float, str, bytes]  # (weight on its log-odds, model kind, model bytes)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _predict(kind: str, blob: bytes, X: np.ndarray) -> np.ndarray:
    if kind == "xgb":
        return models.xgb_predict(blob, X)
    return models.lr_predict(models.deserialise_logreg(blob), X)


@dataclass(frozen=True)
class PersonalModel:
    """A brand's model: the sigmoid of a weighted sum of its components' log-odds."""

    choice: str
    global_sha256: str
    components: tuple[Component, ...]
    scale: float = 1.0  # calibration to the brand's base rate: sigmoid(scale * log-odds + shift)
    shift: float = 0.0

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = sum(w * _logit(_predict(kind, blob, X)) for w, kind, blob in self.components)
        return models.sigmoid(self.scale * np.asarray(z, dtype=np.float64) + self.shift)

    def serialise(self) -> bytes:
        doc = {"format": FORMAT, "choice": self.choice, "global_sha256": self.global_sha256,
               "scale": self.scale, "shift": self.shift,
               "components": [{"weight": w, "model": kind, "bytes": base64.b64encode(blob).decode()}
                              for w, kind, blob in self.components]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @property
    def sha256(self) -> str:
        return models.sha256_hex(self.serialise())

    @classmethod
    def parse(cls, blob: bytes) -> PersonalModel:
        doc = json.loads(blob)
        if doc.get("format") != FORMAT:
            raise ValueError(f"not a personal model ({FORMAT})")
        return cls(str(doc["choice"]), str(doc["global_sha256"]),
                   tuple((float(c["weight"]), str(c["model"]), base64.b64decode(c["bytes"])) for c in doc["components"]),
                   float(doc["scale"]), float(doc["shift"]))


@dataclass(frozen=True)
class Adaptation:
    """What one brand's adaptation produced; only ``choice`` and ``model.sha256`` leave the brand."""

    model: PersonalModel
    validation_auc: dict[str, float] = field(default_factory=dict)  # AUC of the global and each local model there
    dp_noise_multiplier: float | None = None

    @property
    def choice(self) -> str:
        return self.model.choice


def _train_local(name: str, cfg: dict[str, Any], dp: models.DPSGD | None, X: np.ndarray, y: np.ndarray) -> tuple[str, bytes]:
    """The brand's local model ``name`` on these rows: without DP exactly as its local-only model
    trains (the run's seed, the passes a federated run gives a brand); with a DP plan, DP-SGD of
    ``personal-epochs`` epochs, its noise from the operating system, which nobody can replay."""
    if name == "local-xgb":
        params = models.xgb_params(float(cfg["xgb-eta"]), int(cfg["xgb-max-depth"]), int(cfg["seed"]))
        return "xgb", models.xgb_fit_centralized(X, y, rounds=int(cfg["num-rounds"]) * int(cfg["xgb-local-rounds"]), params=params)
    if name != "local-logreg":
        raise ValueError(f"{name!r} is not a local model")
    hyper = {"lr": float(cfg["lr"]), "batch_size": int(cfg["batch-size"]), "l2": float(cfg["l2"])}
    if dp is None:
        params = models.lr_fit_centralized(X, y, epochs=int(cfg["num-rounds"]) * int(cfg["local-epochs"]), seed=int(cfg["seed"]), **hyper)
    else:
        epochs = int(cfg["personal-epochs"])
        plan = models.DPSGD(dp.noise_multiplier, dp.clip, dp.sample_rate, models.dp_steps_per_round(epochs, dp.sample_rate))
        params, _ = models.lr_train(models.lr_init(X.shape[1]), X, y, epochs=epochs, dp=plan, rng=np.random.default_rng(), **hyper)
    return "logreg", models.serialise_logreg(params)


def local_models(dp: bool) -> tuple[str, ...]:
    return LOCALS[:1] if dp else LOCALS


def dp_trainings() -> int:
    """DP-SGD trainings one adaptation runs: the local model on the other members, then on all."""
    return len(local_models(True)) + 1


def dp_adaptation_plan(cfg: dict[str, Any], n_fit: int, federated: models.DPSGD) -> models.DPSGD | None:
    """The adaptation's DP-SGD settings (per training of ``personal-epochs``), its noise calibrated so
    that the brand's federated rounds (``federated``, per round) and all its adaptation trainings
    compose to ``personal-dp-epsilon``; None when there is no budget left for it. ``n_fit``: the rows
    the local model first trains on (the refit on all rows samples at the same rate, so no more often)."""
    from privacy.dp import calibrate_noise_multiplier

    target, eps = float(cfg["personal-dp-epsilon"]), float(cfg["dp-epsilon"])
    if not target > eps:
        return None
    q = models.dp_sample_rate(int(cfg["dp-batch-size"]), max(1, n_fit))
    steps = models.dp_steps_per_round(int(cfg["personal-epochs"]), q) * dp_trainings()
    before = ((federated.noise_multiplier, federated.sample_rate, federated.steps * int(cfg["num-rounds"])),)
    sigma = calibrate_noise_multiplier(target, float(cfg["dp-delta"]), q, steps, after=before)
    return models.DPSGD(noise_multiplier=sigma, clip=float(cfg["dp-clip"]), sample_rate=q, steps=steps)


def _logistic(columns: list[np.ndarray], y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """(weights, intercept) of scikit-learn's logistic regression of ``y`` on these score columns."""
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=C).fit(np.column_stack([np.asarray(c, dtype=np.float64) for c in columns]), np.asarray(y))
    return fit.coef_[0], float(fit.intercept_[0])


def mixture_weight(z_global: np.ndarray, z_local: np.ndarray, y: np.ndarray) -> float:
    """``alpha``, the global model's share of the personal log-odds, stacked on the validation members:
    1.0 or 0.0 when the fit gives the other model no positive weight (rounded: the release names it)."""
    w_global, w_local = np.clip(_logistic([z_global, z_local], y, STACK_C)[0], 0.0, None)
    if not np.isfinite([w_global, w_local]).all() or w_global + w_local <= 0:
        return 1.0
    return round(float(w_global / (w_global + w_local)), 2)


def platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(scale, shift) of sigmoid(scale * z + shift) fitted to ``y`` (lightly regularised); the identity
    if the fit would flip or flatten the ranking."""
    (scale,), shift = _logistic([z], y, 100.0)
    scale, shift = round(float(scale), 6), round(shift, 6)
    return (scale, shift) if np.isfinite([scale, shift]).all() and scale > 1e-3 else (1.0, 0.0)


def validation_mask(row_ids: list[str], cfg: dict[str, Any]) -> np.ndarray:
    """The brand's validation members: a ``personal-holdout`` share of them, picked by a seeded hash of
    the member's id (so the same members whatever the order of the rows or who joined since), kept
    out of the federated rounds: every model, the global one too, is judged on rows it never saw."""
    share = float(cfg["personal-holdout"]) if cfg["personalise"] else 0.0
    key = f"{int(cfg['seed'])}:validation:".encode()
    draws = [int.from_bytes(hashlib.sha256(key + str(r).encode()).digest()[:8], "big") / 2**64 for r in row_ids]
    return np.asarray(draws, dtype=np.float64) < share


def adapt(cfg: dict[str, Any], X: np.ndarray, y: np.ndarray, row_ids: list[str], global_kind: str, global_blob: bytes, *,
          federated_dp: models.DPSGD | None = None) -> Adaptation:
    """The brand's personal model from the global model and its training rows (see the module)."""
    global_sha = models.sha256_hex(global_blob)
    keep_global = PersonalModel("global", global_sha, ((1.0, global_kind, global_blob),))
    y = np.asarray(y).astype(np.int64)
    val = validation_mask(row_ids, cfg)
    fit = ~val
    if min(int(y[val].sum()), int((1 - y[val]).sum())) < MIN_VALIDATION or min(int(y[fit].sum()), int((1 - y[fit]).sum())) < 2:
        return Adaptation(keep_global)  # too few of a class to validate anything
    dp = None
    if float(cfg["dp-epsilon"]) > 0:
        if federated_dp is None or global_kind != "logreg":
            return Adaptation(keep_global)
        dp = dp_adaptation_plan(cfg, int(fit.sum()), federated_dp)
        if dp is None:
            return Adaptation(keep_global)
    z = {"global": _logit(_predict(global_kind, global_blob, X[val]))}
    for name in local_models(dp is not None):
        kind, blob = _train_local(name, cfg, dp, X[fit], y[fit])
        z[name] = _logit(_predict(kind, blob, X[val]))
    auc = {name: models.roc_auc(y[val], v) for name, v in z.items()}
    local = max(local_models(dp is not None), key=lambda n: (auc[n], -LOCALS.index(n)))
    alpha = mixture_weight(z["global"], z[local], y[val])
    if alpha == 1.0:
        model = keep_global
    else:  # the local model once more on all the brand's rows: exactly its local-only model
        kind, blob = _train_local(local, cfg, dp, X, y)
        if alpha == 0.0:
            model = PersonalModel(local, global_sha, ((1.0, kind, blob),))
        else:
            model = PersonalModel(f"mixture-{alpha:g}", global_sha, ((alpha, global_kind, global_blob), (round(1.0 - alpha, 2), kind, blob)))
    if dp is None:  # calibrated as it will score: a retrained model's intercept is not the validated one's
        scale, shift = platt(_logit(model.predict(X[val])), y[val])
        model = dataclasses.replace(model, scale=scale, shift=shift)
    return Adaptation(model, auc, None if dp is None else dp.noise_multiplier)
