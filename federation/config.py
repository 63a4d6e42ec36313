"""Run configuration of the federation app: one table of keys, shared by ServerApp and ClientApp.

Every key below can be set in ``[tool.flwr.app.config]`` of ``pyproject.toml`` (for ``flwr run``),
overridden with ``flwr run . <superlink> --run-config 'key=value ...'``, or passed as ``overrides``
to :func:`federation.simulation.simulate` (``run_simulation`` gives apps an empty run config, so
the apps are built by factories that merge the overrides in).

Keys
----
task                 ``churn`` | ``redeem`` (the label a source builds; telco/synthetic ignore it)
data-source          ``synthetic`` | ``telco`` | ``gateway``; see :mod:`federation.data`
seed                 data split / synthetic population / client RNG seed
synthetic-n          total members of the synthetic alliance (split unevenly across brands)
model                ``logreg`` (numpy logistic regression) | ``xgb`` (federated XGBoost)
strategy             ``fedavg`` | ``fedprox`` | ``fedmedian`` | ``fedtrimmedavg`` | ``krum`` |
                     ``multikrum`` | ``bulyan`` (logreg) ; ``xgb-bagging`` | ``xgb-cyclic`` (xgb)
num-rounds           federated rounds
min-brands           minimum brands that must be connected / sampled for a round (0 = all
                     brands connected when the run starts)
wait-brands          brands the operator waits for before round 1 (0 = max(2, min-brands))
fraction-train       fraction of connected brands sampled per round
local-epochs         local epochs per round (logreg)
lr, batch-size, l2   local SGD settings (logreg)
proximal-mu          FedProx proximal term
trimmed-beta         FedTrimmedAvg trim fraction
num-malicious        f for Krum / MultiKrum / Bulyan
byzantine-brand      partition index of a misbehaving brand (simulation of an attack; -1 = none)
xgb-local-rounds     trees a brand boosts per round (xgb-cyclic; xgb-bagging takes exactly 1:
                     Flower's bagging keeps one tree per reply)
xgb-eta, xgb-max-depth   XGBoost learning rate and tree depth; under xgb-bagging each brand
                     scales eta by about its share of the round's training rows (from the brands'
                     noisy counts), so a round adds about one boosting step over the pooled rows
                     (see ``client_app.bagging_eta_share``)
dp-epsilon           record-level DP target epsilon for the whole run (0 = no record-level DP)
dp-delta             delta of both guarantees
dp-clip              per-member L2 clipping norm of DP-SGD
dp-batch-size        expected Poisson batch (sample rate q = dp-batch-size / n_brand; q stays at the brand)
weight-dp-epsilon    epsilon of the Laplace noise on the training count a brand sends as its FedAvg
                     weight, per round (without SecAgg+; under SecAgg+ the true count is summed inside
                     the masked vectors)
eval-dp-epsilon      epsilon of the Laplace noise on each brand's evaluation histograms, per evaluation
                     round (> 0: a brand's held-out count and score distribution never leave it exactly)
client-dp-noise      client-level DP noise multiplier (Flower's server-side fixed clipping
                     wrapper; 0 = off)
client-dp-clip       client-level clipping norm of a brand's update
secagg               ``true`` = SecAgg+ (Flower's legacy workflow + ``secaggplus_mod``)
secagg-num-shares    odd, <= number of brands (an even value crashes the clients)
secagg-threshold     shares needed to reconstruct a dropped brand's mask
secagg-max-weight    weight bound used by SecAgg+ quantisation (>= largest brand's n)
release-dir          where release records and model files are written
gateway-map          ``gateway`` source: path of the population map (``population.json`` written by
                     ``alliance simulate``: brand ids and database URLs in partition order) or the
                     same JSON inline; a SuperNode can instead get ``brand-db-url`` (and
                     ``brand-id``) in its node config
as-of                ``gateway`` source: as-of time of the training features (ISO 8601; empty = the
                     map's ``train_as_of``)
eval-as-of           ``gateway`` source: as-of time of the held-out rows (empty = the map's
                     ``eval_as_of``, else as-of + 90 days)
round-timeout        seconds the server waits for replies in a round
personalise          ``true``: after the last round every brand mixes the global model with its own
                     local model, in the proportion its validation members call for
                     (:mod:`federation.personalise`)
personal-holdout     share of each brand's members kept out of the federated rounds to learn that
                     mixture on (``personalise``; 0 when off)
personal-epochs      under record-level DP: epochs of each DP-SGD training of the brand's local model
personal-dp-epsilon  under record-level DP: the epsilon of a brand's personal model as a whole
                     (federated rounds and adaptation composed; <= dp-epsilon: no adaptation)
telco-split          ``telco`` source: brands by ``payment`` method (4) or by ``contract`` (3, base
                     rates of 43%, 11% and 3% churn)
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    "task": "churn",
    "data-source": "synthetic",
    "seed": 7,
    "synthetic-n": 12000,
    "model": "logreg",
    "strategy": "fedavg",
    "num-rounds": 3,
    "min-brands": 0,
    "wait-brands": 0,
    "fraction-train": 1.0,
    "local-epochs": 2,
    "lr": 0.1,
    "batch-size": 32,
    "l2": 1e-4,
    "proximal-mu": 0.1,
    "trimmed-beta": 0.2,
    "num-malicious": 1,
    "byzantine-brand": -1,
    "xgb-local-rounds": 1,
    "xgb-eta": 0.1,
    "xgb-max-depth": 4,
    "dp-epsilon": 0.0,
    "dp-delta": 1e-5,
    "dp-clip": 1.0,
    "dp-batch-size": 128,
    "eval-dp-epsilon": 1.0,
    "weight-dp-epsilon": 0.1,
    "client-dp-noise": 0.0,
    "client-dp-clip": 2.0,
    "secagg": False,
    "secagg-num-shares": 3,
    "secagg-threshold": 2,
    "secagg-max-weight": 100000.0,
    "release-dir": "var/federation/releases",
    "gateway-map": "",
    "as-of": "",
    "eval-as-of": "",
    "round-timeout": 600.0,
    "personalise": True,
    "personal-holdout": 0.25,
    "personal-epochs": 10,
    "personal-dp-epsilon": 0.0,
    "telco-split": "payment",
}

def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    return str(value)


def run_config_arg(cfg: dict[str, Any]) -> str:
    """`flwr run --run-config` text for these keys."""
    return " ".join(f"{key}={toml_value(value)}" for key, value in cfg.items())


#: The block to add to the project's pyproject.toml so that ``flwr run`` works (the deployment
#: tests build their own app directory from exactly this text).
FLWR_APP_TOML = (
    "[tool.flwr.app]\n"
    'publisher = "loyalty-alliance"\n'
    'fab-include = ["federation/**/*.py", "privacy/**/*.py"]\n'
    "\n"
    "[tool.flwr.app.components]\n"
    'serverapp = "federation.server_app:app"\n'
    'clientapp = "federation.client_app:app"\n'
    "\n"
    "[tool.flwr.app.config]\n"
    + "".join(f"{key} = {toml_value(value)}\n" for key, value in DEFAULTS.items())
)


def effective(run_config: dict[str, Any] | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """DEFAULTS, then the run config Flower hands the app, then programmatic overrides."""
    cfg = dict(DEFAULTS)
    if run_config:
        cfg.update(dict(run_config))
    if overrides:
        cfg.update(overrides)
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown federation run-config keys: {unknown}")
    for key in ("eval-dp-epsilon", "weight-dp-epsilon"):
        if not float(cfg[key]) > 0:
            raise ValueError(f"{key} must be > 0: without noise a brand's counts leave it exactly")
    return cfg


def resolve(context: Any, overrides: dict[str, Any] | None) -> tuple[dict[str, Any], Any]:
    """(effective config, a Context view whose ``run_config`` is that config).

    Flower forbids modifying ``context.run_config``, so the overrides (used by ``run_simulation``,
    which gives apps an empty run config) go into a fresh ``Context`` sharing node config and state.
    """
    cfg = effective(context.run_config, overrides)
    if not overrides:
        return cfg, context
    from flwr.app import Context

    view = Context(
        run_id=context.run_id,
        node_id=context.node_id,
        node_config=context.node_config,
        state=context.state,
        run_config=dict(cfg),
    )
    return cfg, view
