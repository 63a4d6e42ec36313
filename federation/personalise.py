"""Personalised models: each brand adapts the released global model on its own consented rows.

One global model cannot carry every brand's own patterns (a cafe's regulars are not an airline's),
and a small brand's own model is noisy. So after the federated rounds every brand builds
candidates from the global model and its own training rows, and keeps the one that ranks its
members best on rows it did not train on:

* ``global``: the released model as it is;
* ``fine-tuned``: the global model trained further on the brand's rows (logistic regression:
  ``personal-epochs`` epochs with a proximal pull of ``personal-mu`` towards the global weights, as
  in Ditto; XGBoost: ``personal-trees`` more trees at ``personal-eta``);
* ``local-logreg``, ``local-xgb``: the brand's own model on its rows alone (the same passes as a
  federated run gives a brand);
* ``mixture-0.25|0.5|0.75``: the global model's and the better local model's log-odds mixed with
  the weight given to the global model (the adaptive mixture of APFL, Deng et al. 2020).

Validation: a share of the brand's members (``personal-holdout``, picked by a seeded hash of their
ids) never takes part in the federated rounds. Every trained candidate is trained on the other
members, all are scored on these, and the one with the best AUC there wins (on a tie, the earlier in
the list above). Judged on rows no candidate saw (the global model included, which had seen the
rest), the choice does not favour the global model at a brand that supplied much of its data. The
winner is then trained once more on all the brand's rows. A brand with fewer than ``MIN_VALIDATION``
positives or negatives among its validation members keeps the global model.

Calibration: one global model carries the alliance's base rate, not the brand's (a contract
carrier's churn rate is a tenth of a prepaid one's). So the chosen candidate's log-odds are rescaled
to the brand's own rate (Platt scaling: a slope and an intercept fitted on the validation members'
scores of the final model, as it will score: a retrained model's intercept is not the validated one's);
ranking within the brand is unchanged, and scores from different brands' models become comparable.

A personal model is a weighted sum of component models' log-odds, calibrated, serialised with the
components inside (``alliance.personal/1``), so a brand scores with it alone. It never leaves the brand: the
operator learns which candidate a brand chose and the SHA-256 of its model, nothing else.

Record-level DP (``dp-epsilon`` > 0, logistic regression): the adaptation reads member data again,
so every training it runs is DP-SGD too, with one noise multiplier calibrated so that the brand's
federated rounds and all its adaptation trainings (each candidate and the refit, each counted as a
pass over all the brand's rows) compose to at most ``personal-dp-epsilon`` (RDP accountant), and
there is no calibration (it would read the rows once more).
Without that budget (``personal-dp-epsilon`` <= ``dp-epsilon``) the brand keeps the global model.
XGBoost has no DP-SGD, so ``local-xgb`` is not a candidate under DP. The choice among the
candidates, made on the brand's validation scores, is not covered by that epsilon.
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
MIXTURES = (0.25, 0.5, 0.75)
MIN_VALIDATION = 5  # positives and negatives a brand needs among its validation members to choose at all
CANDIDATES = ("global", "fine-tuned", "local-logreg", "local-xgb", *(f"mixture-{a}" for a in MIXTURES))

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
    validation_auc: dict[str, float] = field(default_factory=dict)  # AUC of each candidate on the validation members
    dp_noise_multiplier: float | None = None

    @property
    def choice(self) -> str:
        return self.model.choice


class _Trainer:
    """Trains the candidates' own components for one brand (DP-SGD when a plan is given)."""

    def __init__(self, cfg: dict[str, Any], global_kind: str, global_blob: bytes, dp: models.DPSGD | None):
        self.cfg, self.kind, self.global_blob, self.dp = cfg, global_kind, global_blob, dp

    def _lr(self, init: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray, epochs: int, mu: float) -> bytes:
        dp = None
        if self.dp is not None:
            q = self.dp.sample_rate
            dp = models.DPSGD(self.dp.noise_multiplier, self.dp.clip, q, models.dp_steps_per_round(epochs, q))
        params, _ = models.lr_train({k: v.copy() for k, v in init.items()}, X, y, epochs=epochs, lr=float(self.cfg["lr"]),
                                    batch_size=int(self.cfg["batch-size"]), l2=float(self.cfg["l2"]), proximal_mu=mu,
                                    dp=dp, rng=self._rng())
        return models.serialise_logreg(params)

    def _rng(self) -> np.random.Generator:
        # Each training from the run's seed, as a brand's local-only model trains (the same rows give the
        # same model); DP-SGD's noise from the operating system, which nobody can replay.
        return np.random.default_rng() if self.dp is not None else np.random.default_rng(int(self.cfg["seed"]))

    def _xgb(self, base: bytes, X: np.ndarray, y: np.ndarray, trees: int, eta: float) -> bytes:
        params = models.xgb_params(eta, int(self.cfg["xgb-max-depth"]), int(self.cfg["seed"]))
        if not base:
            return models.xgb_fit_centralized(X, y, rounds=trees, params=params)
        return models.xgb_local_round(base, X, y, local_rounds=trees, params=params, return_only_new=False)

    def train(self, name: str, X: np.ndarray, y: np.ndarray) -> tuple[str, bytes]:
        cfg, dp = self.cfg, self.dp is not None
        if name == "fine-tuned":
            if self.kind == "xgb":
                return "xgb", self._xgb(self.global_blob, X, y, int(cfg["personal-trees"]), float(cfg["personal-eta"]))
            return "logreg", self._lr(models.deserialise_logreg(self.global_blob), X, y, int(cfg["personal-epochs"]),
                                      float(cfg["personal-mu"]))
        if name == "local-logreg":
            epochs = int(cfg["personal-epochs"]) if dp else int(cfg["num-rounds"]) * int(cfg["local-epochs"])
            return "logreg", self._lr(models.lr_init(X.shape[1]), X, y, epochs, 0.0)
        if name == "local-xgb":
            return "xgb", self._xgb(b"", X, y, int(cfg["num-rounds"]) * int(cfg["xgb-local-rounds"]), float(cfg["xgb-eta"]))
        raise ValueError(f"{name!r} is not a trained candidate")


def trained_candidates(dp: bool) -> tuple[str, ...]:
    return ("fine-tuned", "local-logreg") if dp else ("fine-tuned", "local-logreg", "local-xgb")


def dp_trainings() -> int:
    """DP-SGD trainings one adaptation runs: every trained candidate once, and the winner's refit."""
    return len(trained_candidates(True)) + 1


def dp_adaptation_plan(cfg: dict[str, Any], n_fit: int, federated: models.DPSGD) -> models.DPSGD | None:
    """The adaptation's DP-SGD settings (per training of ``personal-epochs``), its noise calibrated so
    that the brand's federated rounds (``federated``, per round) and all its adaptation trainings
    compose to ``personal-dp-epsilon``; None when there is no budget left for it. ``n_fit``: the rows
    the candidates train on (the refit on all rows samples at the same rate, so no more often)."""
    from privacy.dp import calibrate_noise_multiplier

    target, eps = float(cfg["personal-dp-epsilon"]), float(cfg["dp-epsilon"])
    if not target > eps:
        return None
    q = models.dp_sample_rate(int(cfg["dp-batch-size"]), max(1, n_fit))
    steps = models.dp_steps_per_round(int(cfg["personal-epochs"]), q) * dp_trainings()
    before = ((federated.noise_multiplier, federated.sample_rate, federated.steps * int(cfg["num-rounds"])),)
    sigma = calibrate_noise_multiplier(target, float(cfg["dp-delta"]), q, steps, after=before)
    return models.DPSGD(noise_multiplier=sigma, clip=float(cfg["dp-clip"]), sample_rate=q, steps=steps)


def platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(scale, shift) of sigmoid(scale * z + shift) fitted to ``y`` (scikit-learn's logistic regression,
    lightly regularised); the identity if the fit would flip or flatten the ranking."""
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=100.0).fit(np.asarray(z, dtype=np.float64).reshape(-1, 1), np.asarray(y))
    scale, shift = round(float(fit.coef_[0][0]), 6), round(float(fit.intercept_[0]), 6)
    return (scale, shift) if np.isfinite([scale, shift]).all() and scale > 1e-3 else (1.0, 0.0)


def validation_mask(row_ids: list[str], cfg: dict[str, Any]) -> np.ndarray:
    """The brand's validation members: a ``personal-holdout`` share of them, picked by a seeded hash of
    the member's id (so the same members whatever the order of the rows or who joined since), kept
    out of the federated rounds: every candidate, the global model too, is judged on rows it never saw."""
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
    trainer = _Trainer(cfg, global_kind, global_blob, dp)
    z = {"global": _logit(_predict(global_kind, global_blob, X[val]))}
    for name in trained_candidates(dp is not None):
        kind, blob = trainer.train(name, X[fit], y[fit])
        z[name] = _logit(_predict(kind, blob, X[val]))
    local = max((n for n in z if n.startswith("local-")), key=lambda n: models.roc_auc(y[val], z[n]))
    for a in MIXTURES:
        z[f"mixture-{a}"] = a * z["global"] + (1 - a) * z[local]
    auc = {name: models.roc_auc(y[val], v) for name, v in z.items()}
    choice = max((n for n in CANDIDATES if n in auc), key=lambda n: (auc[n], -CANDIDATES.index(n)))
    # The winner, trained once more on all the brand's rows.
    if choice == "global":
        components = keep_global.components
    elif choice.startswith("mixture-"):
        a = float(choice.split("-", 1)[1])
        kind, blob = trainer.train(local, X, y)
        components = ((a, global_kind, global_blob), (1 - a, kind, blob))
    else:
        kind, blob = trainer.train(choice, X, y)
        components = ((1.0, kind, blob),)
    model = PersonalModel(choice, global_sha, components)
    if dp is None:  # calibrated as it will score: a retrained model's intercept is not the validated one's
        scale, shift = platt(_logit(model.predict(X[val])), y[val])
        model = dataclasses.replace(model, scale=scale, shift=shift)
    return Adaptation(model, auc, None if dp is None else dp.noise_multiplier)
