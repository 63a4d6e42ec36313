"""Flower ClientApp: one per brand.  It reads its own brand's rows and sends back only a model.

What leaves a brand (and the tests inspect the real reply messages for it):

* train replies: one ``ArrayRecord`` with the model (``w`` and ``b`` for logistic regression,
  one uint8 array of booster bytes for XGBoost), a ``MetricRecord`` with the brand's FedAvg weight
  (``weight``: its training count plus Laplace noise of scale 1 / ``weight-dp-epsilon``; and
  ``unit-weight``, 1, for client-level DP), and a ``ConfigRecord`` with the brand's id;
* personalise replies (after the last round): what the brand uses (global, local or a mixture) and the SHA-256 of
  its personal model (:mod:`federation.personalise`), which stays at the brand;
* evaluate replies: two 100-bin score histograms (positives / negatives per score bin) with
  Laplace noise of scale 1 / ``eval-dp-epsilon`` on every bin, from which the operator computes
  each brand's and the pooled AUC.

What a reply never carries: a feature row, row id or pseudonym; and nothing that equals or reveals
a brand's count of members: no example count, no loss, no DP-SGD sample rate, noise multiplier or
step count (each brand calibrates its noise to the run's epsilon itself; its sample rate is
batch / n). With SecAgg+ the model is masked by Flower's ``secaggplus_mod``, which also sums the
brands' example counts as weights inside the masked vectors; the plain count the legacy FitRes
needs for that is replaced by 1 before the reply leaves (``private_secaggplus_mod``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Code, EvaluateRes, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from federation import models, personalise
from federation.config import resolve
from federation.data import BrandData, keep_personal_model, load_partition

LR_KEYS = ("w", "b")
PLAIN_COUNT = "fitres.num_examples"  # where Flower's legacy FitRes keeps the example count


def private_secaggplus_mod(msg: Message, ctxt: Context, call_next: Any) -> Message:
    """Flower's ``secaggplus_mod`` for SecAgg+ rounds (a pass-through for every other message),
    after which the brand's example count, which the mod has just folded into the masked vector as
    its weight, leaves the plain FitRes: it is set to 1."""
    if RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, ctxt)
    reply = secaggplus_mod(msg, ctxt, call_next)
    if PLAIN_COUNT in reply.content.metric_records:
        reply.content.metric_records[PLAIN_COUNT] = MetricRecord({"num_examples": 1})
    return reply


@functools.lru_cache(maxsize=256)
def _calibrated_sigma(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    from privacy.dp import calibrate_noise_multiplier

    return calibrate_noise_multiplier(epsilon, delta, sample_rate, steps)


def dp_plan(cfg: dict[str, Any], n_train: int) -> models.DPSGD | None:
    """The brand's DP-SGD plan for one round, calibrated for the whole run's budget."""
    eps = float(cfg["dp-epsilon"])
    if eps <= 0:
        return None
    q = models.dp_sample_rate(int(cfg["dp-batch-size"]), n_train)
    steps_round = models.dp_steps_per_round(int(cfg["local-epochs"]), q)
    total = steps_round * int(cfg["num-rounds"])
    sigma = _calibrated_sigma(eps, float(cfg["dp-delta"]), q, total)
    return models.DPSGD(noise_multiplier=sigma, clip=float(cfg["dp-clip"]), sample_rate=q, steps=steps_round)


def _brand_index(context: Context) -> int:
    return int(context.node_config.get("partition-id", -1))


def bagging_eta_share(n_train: int, config: dict[str, Any]) -> float:
    """The factor of this brand's eta in a FedXgbBagging round: about its share of the round's rows.

    Bagging appends every brand's new tree to the global model, so at full eta a round of N brands
    takes N boosting steps at once and overshoots.  Scaled by n_brand / n_alliance, the round's
    trees add up to about one boosting step over the pooled rows.  The operator sends the sum of the
    noisy counts the brands sent as weights in the previous round (``train-examples-total``: no
    brand's count is in it exactly) and the number of brands training now (``train-brands``);
    round 1 has no total yet and splits equally.  (Equal 1/N weights throughout, as in Flower's
    XGBoost example, would give a 200-row brand's tree the weight of a 30,000-row brand's.)
    """
    total = float(config.get("train-examples-total", 0))
    if total > 0:
        return min(1.0, n_train / total)
    return 1.0 / max(1, int(config.get("train-brands", 1)))


def local_train(
    cfg: dict[str, Any], data: BrandData, arrays: dict[str, np.ndarray], config: dict[str, Any], context: Context
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """One round of local training. Returns (model arrays to send, scalar metrics to send)."""
    server_round = int(config.get("server-round", 1))
    rng = np.random.default_rng([int(cfg["seed"]), _brand_index(context) + 1, server_round])
    if cfg["model"] == "xgb":
        bagging = cfg["strategy"] == "xgb-bagging"
        eta = float(cfg["xgb-eta"]) * (bagging_eta_share(data.n_train, config) if bagging else 1.0)
        params = models.xgb_params(eta, int(cfg["xgb-max-depth"]), int(cfg["seed"]))
        blob = models.xgb_local_round(
            arrays["0"].tobytes(),
            data.X,
            data.y,
            local_rounds=int(cfg["xgb-local-rounds"]),
            params=params,
            return_only_new=bagging,
        )
        new = {"0": np.frombuffer(blob, dtype=np.uint8)}
    else:
        plan = dp_plan(cfg, data.n_train)
        params = {k: np.asarray(arrays[k], dtype=np.float32) for k in LR_KEYS}
        new, _loss = models.lr_train(
            params,
            data.X,
            data.y,
            epochs=int(cfg["local-epochs"]),
            lr=float(cfg["lr"]),
            batch_size=int(cfg["batch-size"]),
            l2=float(cfg["l2"]),
            proximal_mu=float(config.get("proximal-mu", 0.0)),
            dp=plan,
            rng=rng,
        )
        if _brand_index(context) == int(cfg["byzantine-brand"]):
            # A misbehaving brand (attack simulation): a large random update.
            new = {k: (v + rng.normal(0.0, 10.0, v.shape)).astype(np.float32) for k, v in new.items()}
    return new, {"weight": models.noisy_count(data.n_train, float(cfg["weight-dp-epsilon"])), "unit-weight": 1.0}


def local_evaluate(cfg: dict[str, Any], data: BrandData, arrays: dict[str, np.ndarray], context: Context) -> dict[str, Any]:
    """Evaluate the global model on the brand's held-out rows: aggregate figures only."""
    if cfg["model"] == "xgb":
        p = models.xgb_predict(arrays["0"].tobytes(), data.X_test)
    else:
        p = models.lr_predict({k: arrays[k] for k in LR_KEYS}, data.X_test)
    pos, neg = models.score_histograms(data.y_test, p)
    noisy = models.noisy_histograms(pos, neg, float(cfg["eval-dp-epsilon"]))
    return {"weight": 1.0, "unit-weight": 1.0, "hist-pos": noisy[0], "hist-neg": noisy[1]}


def federated_rows(cfg: dict[str, Any], data: BrandData) -> BrandData:
    """The rows a brand trains on in the federated rounds: all but its validation members
    (:func:`federation.personalise.validation_mask`), on which it later chooses its own model."""
    keep = ~personalise.validation_mask(data.row_ids, cfg)
    if keep.all():
        return data
    return dataclasses.replace(data, X=data.X[keep], y=data.y[keep], row_ids=[r for r, k in zip(data.row_ids, keep) if k])


def local_personalise(cfg: dict[str, Any], data: BrandData, context: Context, global_model: bytes) -> dict[str, Any]:
    """Adapt the released global model on the brand's own rows and keep the result at the brand."""
    kind = "xgb" if cfg["model"] == "xgb" else "logreg"
    adaptation = personalise.adapt(cfg, data.X, data.y, data.row_ids, kind, global_model,
                                   federated_dp=dp_plan(cfg, federated_rows(cfg, data).n_train))
    model = adaptation.model.serialise()
    kept = keep_personal_model(cfg, context.node_config, global_sha256=models.sha256_hex(global_model),
                               choice=adaptation.choice, model=model)
    return {"brand-id": data.brand_id, "choice": adaptation.choice, "model-sha256": models.sha256_hex(model), "kept": kept}


def _legacy_arrays(params: Any, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    nds = parameters_to_ndarrays(params)
    if cfg["model"] == "xgb":
        return {"0": nds[0]}
    return dict(zip(LR_KEYS, nds, strict=True))


def processing_ref(msg: Message, context: Context, stage: str) -> str:
    """The training processing a round's read is recorded under: ``run:<run id>:round:<n>:<stage>``."""
    records = msg.content.config_records
    config = next((records[k] for k in ("config", "fitins.config", "evaluateins.config") if k in records), {})
    return f"run:{context.run_id}:round:{int(config.get('server-round', 0))}:{stage}"


def build_client_app(overrides: dict[str, Any] | None = None) -> ClientApp:
    """The ClientApp; ``overrides`` are merged into the run config (for ``run_simulation``)."""
    app = ClientApp(mods=[private_secaggplus_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg, context = resolve(context, overrides)
        data = federated_rows(cfg, load_partition(context, processing_ref(msg, context, "train")))
        content = msg.content
        if "fitins.parameters" in content.array_records:  # legacy path (SecAgg+ workflow)
            fitins = compat.recorddict_to_fitins(content, keep_input=True)
            new, metrics = local_train(cfg, data, _legacy_arrays(fitins.parameters, cfg), dict(fitins.config), context)
            fitres = FitRes(
                status=Status(code=Code.OK, message="ok"),
                parameters=ndarrays_to_parameters([new[k] for k in (LR_KEYS if cfg["model"] != "xgb" else ("0",))]),
                num_examples=data.n_train,  # the SecAgg+ weight: masked by the mod, then replaced by 1
                metrics={"brand-id": data.brand_id},
            )
            return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)
        arrays = {k: v.numpy() for k, v in content["arrays"].items()}
        config = dict(content["config"]) if "config" in content.config_records else {}
        new, metrics = local_train(cfg, data, arrays, config, context)
        reply = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in new.items()}),
                "metrics": MetricRecord(metrics),
                "brand": ConfigRecord({"brand-id": data.brand_id}),
            }
        )
        return Message(content=reply, reply_to=msg)

    @app.train("personalise")
    def personalise_(msg: Message, context: Context) -> Message:
        cfg, context = resolve(context, overrides)
        released = msg.content["model"]["bytes"].numpy().tobytes()
        if models.sha256_hex(released) != str(msg.content["config"]["model-sha256"]):
            raise ValueError("the global model sent for personalisation does not match its SHA-256")
        data = load_partition(context, processing_ref(msg, context, "personalise"))
        reply = local_personalise(cfg, data, context, released)
        return Message(content=RecordDict({"personal": ConfigRecord(reply)}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        cfg, context = resolve(context, overrides)
        data = load_partition(context, processing_ref(msg, context, "evaluate"))
        content = msg.content
        if "evaluateins.parameters" in content.array_records:  # legacy path
            ins = compat.recorddict_to_evaluateins(content, keep_input=True)
            m = local_evaluate(cfg, data, _legacy_arrays(ins.parameters, cfg), context)
            legacy = {k: v for k, v in m.items() if not isinstance(v, list)}
            legacy["hist-pos"] = np.asarray(m["hist-pos"], dtype="<f8").tobytes()
            legacy["hist-neg"] = np.asarray(m["hist-neg"], dtype="<f8").tobytes()
            legacy["brand-id"] = data.brand_id
            res = EvaluateRes(status=Status(code=Code.OK, message="ok"), loss=0.0, num_examples=1, metrics=legacy)  # no count, no loss
            return Message(compat.evaluateres_to_recorddict(res), reply_to=msg)
        arrays = {k: v.numpy() for k, v in content["arrays"].items()}
        m = local_evaluate(cfg, data, arrays, context)
        reply = RecordDict({"metrics": MetricRecord(m), "brand": ConfigRecord({"brand-id": data.brand_id})})
        return Message(content=reply, reply_to=msg)

    return app


app = build_client_app()
