"""Flower ServerApp: the alliance operator.  Aggregates brands' models, never sees their rows.

Paths
-----
* Message API (default): Flower's ``flwr.serverapp.strategy`` FedAvg / FedProx / FedMedian /
  FedTrimmedAvg / Krum / MultiKrum / Bulyan for logistic regression, FedXgbBagging / FedXgbCyclic
  for XGBoost (bagging: the operator tells the brands their number and last round's row total, so
  each scales its eta by its share of the rows and a round adds about one boosting step);
  optionally wrapped in ``DifferentialPrivacyServerSideFixedClipping`` (client-level DP, with
  Flower's RDP accountant) when ``client-dp-noise > 0``.
* SecAgg+ (``secagg = true``): Flower's legacy workflow, ``LegacyContext`` +
  ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` with the legacy FedAvg; the operator
  only ever sees the sum of the brands' masked, quantised models.

Record-level DP (``dp-epsilon > 0``) happens inside every brand (DP-SGD, see
:mod:`federation.models`); brands report the (noise multiplier, sample rate, steps) they used
and the operator recomputes epsilon with :class:`privacy.dp.PrivacyAccountant` for the release.

After the last round, every brand adapts the global model on its own rows (``personalise``, see
:mod:`federation.personalise`); the operator learns only what each brand uses (the global model's share) and the
SHA-256 of its personal model, which stays at the brand.

Every run ends with a release record (:mod:`federation.releases`).  A ServerApp built with the
brands' gateways (``build_server_app(gateways=...)``: the simulation over gateway databases, the
demo) then publishes it with :func:`federation.releases.publish_release`: an audit entry in every
participating gateway's log and the release anchored on chain.  A deployed ServerApp (its own
process under a SuperLink) has no gateway handles; there the release stays a file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp import strategy as st
from flwr.supercore import log

from federation import models, personalise
from federation.config import resolve
from federation.data import feature_names_for
from federation.releases import publish_release, write_release

LR_STRATEGIES = ("fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan")
XGB_STRATEGIES = ("xgb-bagging", "xgb-cyclic")


class RunRecorder:
    """Collects what the release record needs from the replies of every round: which brands took
    part, and the evaluation histograms (noisy: the brands' counts never reach the operator)."""

    def __init__(self) -> None:
        self.rounds: dict[int, dict[str, Any]] = {}
        self.brands: set[str] = set()
        self.evaluations = 0
        self.weights: dict[int, float] = {}  # per round, the sum of the brands' noisy counts (their FedAvg weights)

    def _round(self, r: int) -> dict[str, Any]:
        return self.rounds.setdefault(r, {"round": r, "train_brands": [], "evaluate_brands": [], "per_brand": {}})

    def train(self, r: int, brands: list[str], weights: list[float] = ()) -> None:
        rec = self._round(r)
        self.brands.update(brands)
        rec["train_brands"] = sorted(brands)
        self.weights[r] = float(sum(weights))

    def weight_total(self, r: int) -> float:
        """The brands' noisy training counts of round ``r`` summed (0 before any reply)."""
        return self.weights.get(r, 0.0)

    def evaluate(self, r: int, replies: list[tuple[str, dict[str, Any]]]) -> dict[str, float]:
        rec = self._round(r)
        pos = np.zeros(models.HIST_BINS)
        neg = np.zeros(models.HIST_BINS)
        for brand, m in replies:
            rec["evaluate_brands"].append(brand)
            b_pos, b_neg = np.asarray(m["hist-pos"], dtype=float), np.asarray(m["hist-neg"], dtype=float)
            pos += b_pos
            neg += b_neg
            rec["per_brand"][brand] = {"auc": models.auc_from_histograms(b_pos, b_neg)}
        out: dict[str, float] = {}
        if replies:
            self.evaluations += 1
            out = {"auc_pooled": models.auc_from_histograms(pos, neg), "examples_noisy": round(float(pos.sum() + neg.sum()))}
            rec["evaluate"] = out
        return out

    def metrics_per_round(self) -> list[dict[str, Any]]:
        return [self.rounds[r] for r in sorted(self.rounds)]


def _brand_of(msg: Message) -> str:
    if "brand" in msg.content.config_records:
        return str(msg.content.config_records["brand"]["brand-id"])
    return f"node-{msg.metadata.src_node_id}"


def _metrics_of(msg: Message) -> dict[str, Any]:
    return dict(next(iter(msg.content.metric_records.values())))


def _scalar_mean(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Weighted mean of the scalar metrics (lists such as histograms are summed)."""
    ms = [next(iter(r.metric_records.values())) for r in records]
    w = np.asarray([float(m[weight_key]) for m in ms])
    out = MetricRecord()
    for key, value in ms[0].items():
        if key == weight_key:
            continue
        if isinstance(value, list):
            out[key] = [int(v) if isinstance(v, int) else float(v) for v in np.sum([m[key] for m in ms], axis=0).tolist()]
        else:
            out[key] = float(np.average([float(m[key]) for m in ms], weights=w))
    return out


def _instrument(strategy: st.Strategy, recorder: RunRecorder) -> st.Strategy:
    """Record per-brand figures of each round's replies before the strategy aggregates them."""
    inner_train = strategy.aggregate_train
    inner_eval = strategy.aggregate_evaluate

    def aggregate_train(server_round: int, replies: Iterable[Message]):  # type: ignore[no-untyped-def]
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        recorder.train(server_round, [_brand_of(m) for m in ok], [float(_metrics_of(m).get("weight", 0.0)) for m in ok])
        return inner_train(server_round, replies)

    def aggregate_evaluate(server_round: int, replies: Iterable[Message]):  # type: ignore[no-untyped-def]
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        pooled = recorder.evaluate(server_round, [(_brand_of(m), _metrics_of(m)) for m in ok])
        agg = inner_eval(server_round, replies)
        if agg is not None:
            for k, v in pooled.items():
                agg[k] = v
        return agg

    strategy.aggregate_train = aggregate_train  # type: ignore[method-assign]
    strategy.aggregate_evaluate = aggregate_evaluate  # type: ignore[method-assign]
    return strategy


def _announce_row_counts(strategy: st.Strategy, recorder: RunRecorder) -> st.Strategy:
    """Tell the brands of a bagging round how many brands train and the sum of the noisy counts they
    sent as weights in the previous round, so each scales its eta by about its share of the rows
    (:func:`federation.client_app.bagging_eta_share`)."""
    inner = strategy.configure_train

    def configure_train(server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):  # type: ignore[no-untyped-def]
        messages = list(inner(server_round, arrays, config, grid))
        for msg in messages:
            record = msg.content.config_records[strategy.configrecord_key]
            record["train-brands"] = len(messages)
            record["train-examples-total"] = round(recorder.weight_total(server_round - 1))
        return messages

    strategy.configure_train = configure_train  # type: ignore[method-assign]
    return strategy


def build_strategy(cfg: dict[str, Any], num_nodes: int) -> st.Strategy:
    """The Flower strategy named by the run config."""
    name = str(cfg["strategy"])
    model = str(cfg["model"])
    min_nodes = int(cfg["min-brands"]) or num_nodes
    client_dp = float(cfg["client-dp-noise"]) > 0
    common: dict[str, Any] = {
        "fraction_train": float(cfg["fraction-train"]),
        "fraction_evaluate": 1.0,
        "min_train_nodes": min_nodes,
        "min_evaluate_nodes": min_nodes,
        "min_available_nodes": min_nodes,
        # A brand's weight is its count with Laplace noise (client_app): no brand sends its count.
        "weighted_by_key": "unit-weight" if client_dp else "weight",
        "train_metrics_aggr_fn": _scalar_mean,
        "evaluate_metrics_aggr_fn": _scalar_mean,
    }
    if model == "xgb":
        if name not in XGB_STRATEGIES:
            raise ValueError(f"model xgb needs strategy in {XGB_STRATEGIES}, got {name!r}")
        if float(cfg["dp-epsilon"]) > 0 or client_dp:
            raise ValueError("DP is implemented for the logistic-regression model only")
        if name == "xgb-bagging" and int(cfg["xgb-local-rounds"]) != 1:
            # Flower's aggregate_bagging appends num_parallel_tree (= 1) trees of each reply: a
            # brand's further local trees would be dropped silently.
            raise ValueError("xgb-bagging takes one tree per brand and round: set xgb-local-rounds = 1")
        if name == "xgb-cyclic":
            common.pop("min_train_nodes")
            common.pop("min_evaluate_nodes")
            return st.FedXgbCyclic(**common)
        return st.FedXgbBagging(**common)
    if name not in LR_STRATEGIES:
        raise ValueError(f"model logreg needs strategy in {LR_STRATEGIES}, got {name!r}")
    f = int(cfg["num-malicious"])
    strategy: st.Strategy
    if name == "fedavg":
        strategy = st.FedAvg(**common)
    elif name == "fedprox":
        strategy = st.FedProx(**common, proximal_mu=float(cfg["proximal-mu"]))
    elif name == "fedmedian":
        strategy = st.FedMedian(**common)
    elif name == "fedtrimmedavg":
        strategy = st.FedTrimmedAvg(**common, beta=float(cfg["trimmed-beta"]))
    elif name == "krum":
        strategy = st.Krum(**common, num_malicious_nodes=f)
    elif name == "multikrum":
        strategy = st.MultiKrum(**common, num_malicious_nodes=f, num_nodes_to_select=max(1, min_nodes - f))
    else:
        strategy = st.Bulyan(**common, num_malicious_nodes=f)
    if client_dp:
        if name != "fedavg":
            raise ValueError("client-level DP (with accounting) needs strategy fedavg")
        from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
        from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

        accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=float(cfg["dp-delta"]),
                population_size=min_nodes,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
        )
        strategy = st.DifferentialPrivacyServerSideFixedClipping(
            strategy,
            noise_multiplier=float(cfg["client-dp-noise"]),
            clipping_norm=float(cfg["client-dp-clip"]),
            num_sampled_clients=min_nodes,
            accountant=accountant,
        )
    return strategy


def _wait_for_brands(grid: Grid, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        nodes = len(list(grid.get_node_ids()))
        if nodes >= n or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def privacy_section(cfg: dict[str, Any], recorder: RunRecorder, client_dp_spent: Any = None) -> dict[str, Any]:
    """The release record's privacy block: what each epsilon covers and what it does not."""
    delta = float(cfg["dp-delta"])
    record_level = None
    if float(cfg["dp-epsilon"]) > 0:
        record_level = {
            "unit": "member",
            "epsilon": float(cfg["dp-epsilon"]),
            "delta": delta,
            "clip": float(cfg["dp-clip"]),
            "mechanism": "DP-SGD (Poisson-subsampled Gaussian) inside each brand",
            "accountant": "dp_accounting.rdp via privacy.dp.PrivacyAccountant, run by each brand on its own sample rate "
                          "(batch / its count, which stays at the brand) to calibrate its noise to this epsilon for the whole run",
            "covers": "every model update a brand sent, so the released model: adding or removing one member's rows at one "
                      "brand changes their distribution by at most this epsilon",
        }
    evaluation = {
        "unit": "member",
        "epsilon_per_evaluation": float(cfg["eval-dp-epsilon"]),
        "evaluations": recorder.evaluations,
        "epsilon": float(cfg["eval-dp-epsilon"]) * recorder.evaluations,  # basic composition over the rounds
        "delta": 0.0,
        "mechanism": "Laplace noise of scale 1/epsilon on every bin of each brand's two score histograms",
        "covers": "the evaluation histograms and every figure derived from them (AUCs, the approximate example total)",
    }
    client_level = None
    if float(cfg["client-dp-noise"]) > 0:
        client_level = {
            "unit": "brand",
            "noise_multiplier": float(cfg["client-dp-noise"]),
            "clipping_norm": float(cfg["client-dp-clip"]),
            "epsilon": None if client_dp_spent is None else float(client_dp_spent.epsilon),
            "delta": delta,
            "accountant": "flwr RdpAccountant (no amplification)",
            "mechanism": "DifferentialPrivacyServerSideFixedClipping",
        }
    train_rounds = sum(1 for r in recorder.rounds.values() if r["train_brands"])
    weights = None if cfg["secagg"] else {
        "unit": "member",
        "epsilon_per_round": float(cfg["weight-dp-epsilon"]),
        "rounds": train_rounds,
        "epsilon": float(cfg["weight-dp-epsilon"]) * train_rounds,
        "mechanism": "Laplace noise of scale 1/epsilon on the training count each brand sends as its FedAvg weight "
                     "(under SecAgg+ the true counts are summed inside the masked vectors instead)",
    }
    personal = None
    if cfg["personalise"] and record_level is not None:
        adapting = float(cfg["personal-dp-epsilon"]) > float(cfg["dp-epsilon"])
        personal = {
            "unit": "member",
            "epsilon": float(cfg["personal-dp-epsilon"]) if adapting else record_level["epsilon"],
            "delta": delta,
            "mechanism": "DP-SGD with one noise multiplier for every adaptation training, calibrated by each brand"
                         if adapting else "none: without a budget above dp-epsilon every brand keeps the global model",
            "accountant": "dp_accounting.rdp via privacy.dp.calibrate_noise_multiplier(after=the brand's federated rounds)",
            "covers": "a brand's personal model as a whole: its federated rounds and every adaptation training "
                      "(its local model on the other members and on all, each counted as passes over all its rows), composed",
            "not_covered": "the mixture's two weights a brand fits on its validation members' scores, and so what it uses",
        }
    guarantee = "+".join(g for g, x in (("record-level", record_level), ("client-level", client_level)) if x) or "none"
    return {
        "guarantee": guarantee,
        "epsilon_spent": record_level["epsilon"] if record_level else (client_level or {}).get("epsilon"),
        "delta": delta if guarantee != "none" else None,
        "record_level": record_level,
        "client_level": client_level,
        "evaluation": evaluation,
        "aggregation_weights": weights,
        "personalisation": personal,
        "not_covered": [
            "which brands took part in which round (named in this record)",
            "the model updates themselves when record-level DP is off (without SecAgg+ the operator sees each brand's update)",
            "what the released model is then used for (scoring runs at each brand on its own consented members)",
        ],
    }


def _initial_arrays(cfg: dict[str, Any], dim: int) -> dict[str, np.ndarray]:
    if cfg["model"] == "xgb":
        return {"0": np.zeros(0, dtype=np.uint8)}
    return models.lr_init(dim)


def _run_message_api(grid: Grid, cfg: dict[str, Any], dim: int, num_nodes: int, recorder: RunRecorder):  # type: ignore[no-untyped-def]
    strategy = _instrument(build_strategy(cfg, num_nodes), recorder)
    if cfg["strategy"] == "xgb-bagging":
        strategy = _announce_row_counts(strategy, recorder)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in _initial_arrays(cfg, dim).items()}),
        num_rounds=int(cfg["num-rounds"]),
        timeout=float(cfg["round-timeout"]),
        train_config=ConfigRecord({"num-rounds": int(cfg["num-rounds"])}),
        evaluate_config=ConfigRecord({"num-rounds": int(cfg["num-rounds"])}),
    )
    final = {k: v.numpy() for k, v in result.arrays.items()} if result.arrays is not None else {}
    spent = strategy.privacy_spent() if hasattr(strategy, "privacy_spent") else None
    return final, spent


def _run_secagg(grid: Grid, context: Context, cfg: dict[str, Any], dim: int, num_nodes: int, recorder: RunRecorder):  # type: ignore[no-untyped-def]
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    if cfg["model"] != "logreg" or cfg["strategy"] not in ("fedavg", "fedprox"):
        raise ValueError("SecAgg+ runs with the logreg model and FedAvg/FedProx aggregation")
    if float(cfg["client-dp-noise"]) > 0:
        raise ValueError("server-side client-level DP clips individual updates; it cannot run under SecAgg+")
    shares = int(cfg["secagg-num-shares"])
    min_nodes = int(cfg["min-brands"]) or num_nodes
    if shares % 2 == 0 or shares > min_nodes:
        raise ValueError(f"secagg-num-shares must be odd and <= number of brands ({min_nodes}), got {shares}")
    rounds_seen = {"fit": 0, "eval": 0}
    mu = float(cfg["proximal-mu"]) if cfg["strategy"] == "fedprox" else 0.0

    def fit_config(server_round: int) -> dict[str, Any]:
        return {"server-round": server_round, "num-rounds": int(cfg["num-rounds"]), "proximal-mu": mu}

    def eval_metrics(results: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        rounds_seen["eval"] += 1
        replies = []
        for _, m in results:
            m = dict(m)
            m["hist-pos"] = np.frombuffer(m["hist-pos"], dtype="<f8")
            m["hist-neg"] = np.frombuffer(m["hist-neg"], dtype="<f8")
            replies.append((str(m["brand-id"]), m))
        out = recorder.evaluate(rounds_seen["eval"], replies)
        # Under SecAgg+ the fit replies are masked; the brands that trained are those the
        # workflow aggregated, which the evaluate round (all sampled brands) reports.
        recorder.train(rounds_seen["eval"], [brand for brand, _ in replies])
        return out

    def fit_metrics(results: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        rounds_seen["fit"] += 1
        return {}

    init = models.lr_init(dim)
    strategy = LegacyFedAvg(
        fraction_fit=float(cfg["fraction-train"]),
        fraction_evaluate=1.0,
        min_fit_clients=min_nodes,
        min_evaluate_clients=min_nodes,
        min_available_clients=min_nodes,
        on_fit_config_fn=fit_config,
        on_evaluate_config_fn=fit_config,
        initial_parameters=ndarrays_to_parameters([init["w"], init["b"]]),
        fit_metrics_aggregation_fn=fit_metrics,
        evaluate_metrics_aggregation_fn=eval_metrics,
    )
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=int(cfg["num-rounds"])), strategy=strategy)
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=shares,
            reconstruction_threshold=int(cfg["secagg-threshold"]),
            max_weight=float(cfg["secagg-max-weight"]),
            timeout=float(cfg["round-timeout"]),
        )
    )
    workflow(grid, legacy)
    params = parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    )
    return {"w": params[0], "b": params[1]}, None


def personalise_brands(grid: Grid, cfg: dict[str, Any], blob: bytes) -> dict[str, dict[str, Any]]:
    """Every connected brand adapts the released model ``blob`` on its own rows; returns brand id ->
    what it uses (global, local or a mixture, its personal model's SHA-256, whether the brand kept it). A brand
    that fails or does not answer in time uses the global model."""
    content = RecordDict({
        "model": ArrayRecord({"bytes": Array(np.frombuffer(blob, dtype=np.uint8).copy())}),
        "config": ConfigRecord({"model-sha256": models.sha256_hex(blob), "server-round": int(cfg["num-rounds"])}),
    })
    messages = [Message(content=content, dst_node_id=node, message_type="train.personalise") for node in grid.get_node_ids()]
    uses: dict[str, dict[str, Any]] = {}
    for reply in grid.send_and_receive(messages, timeout=float(cfg["round-timeout"])):
        if reply.has_error():
            log(WARNING, "alliance: a brand could not personalise the model: %s", reply.error.reason)
            continue
        r = reply.content["personal"]
        uses[str(r["brand-id"])] = {"uses": str(r["choice"]), "model_sha256": str(r["model-sha256"]), "kept": bool(r["kept"])}
    return uses


def personalisation_section(cfg: dict[str, Any], uses: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The release record's account of the brands' personal models."""
    return {
        "enabled": bool(cfg["personalise"]),
        "uses_one_of": list(personalise.USES),
        "mixed_on": f"each brand's validation members ({float(cfg['personal-holdout']):g} of them, kept out of the rounds)",
        "brands": uses,
    }


class _WireTap:
    """The Grid, with every reply the operator receives handed to `tap` first."""

    def __init__(self, grid: Grid, tap: Callable[[Message], None]):
        self._grid, self._tap = grid, tap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *args: Any, **kwargs: Any) -> list[Message]:
        replies = list(self._grid.send_and_receive(messages, *args, **kwargs))
        for reply in replies:
            self._tap(reply)
        return replies


def build_server_app(overrides: dict[str, Any] | None = None, gateways: dict[str, Any] | None = None,
                     wire_tap: Callable[[Message], None] | None = None) -> ServerApp:
    """The ServerApp; ``overrides`` are merged into the run config (for ``run_simulation``).

    ``gateways`` (brand id -> :class:`gateway.runtime.Gateway`, in this process): publish every
    release to them; the per-brand result goes next to the record as ``<version>.published.json``.
    ``wire_tap`` sees every reply exactly as the operator receives it (what a curious operator could
    keep: the tests assert that none of it reveals a brand's counts).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if wire_tap is not None:
            grid = _WireTap(grid, wire_tap)  # type: ignore[assignment]
        cfg, context = resolve(context, overrides)
        started = time.monotonic()
        names = feature_names_for(cfg)
        wait_for = int(cfg["wait-brands"]) or max(2, int(cfg["min-brands"]))
        num_nodes = _wait_for_brands(grid, wait_for, float(cfg["round-timeout"]))
        time.sleep(0.2)
        num_nodes = max(num_nodes, len(list(grid.get_node_ids())))
        log(INFO, "alliance: %d brands connected; task=%s model=%s strategy=%s", num_nodes, cfg["task"], cfg["model"], cfg["strategy"])
        recorder = RunRecorder()
        if bool(cfg["secagg"]):
            final, spent = _run_secagg(grid, context, cfg, len(names), num_nodes, recorder)
        else:
            final, spent = _run_message_api(grid, cfg, len(names), num_nodes, recorder)
        if not final or (cfg["model"] != "xgb" and "w" not in final):
            raise RuntimeError("no round produced a global model (every brand failed); no release written")
        if cfg["model"] == "xgb":
            blob, fmt = final["0"].tobytes(), "xgboost.json"
        else:
            blob, fmt = models.serialise_logreg(final, names), "alliance.logreg/1"
        uses = personalise_brands(grid, cfg, blob) if cfg["personalise"] else {}
        rounds = recorder.metrics_per_round()
        completed = [r["round"] for r in rounds if r.get("train_brands")]
        final_metrics = next((r["evaluate"] for r in reversed(rounds) if "evaluate" in r), {})
        path, record = write_release(
            str(cfg["release-dir"]),
            model_bytes=blob,
            model_format=fmt,
            fields={
                "task": cfg["task"],
                "model": cfg["model"],
                "strategy": cfg["strategy"],
                "data_source": cfg["data-source"],
                "feature_names": names,
                "run_id": int(context.run_id),
                "num_rounds": int(cfg["num-rounds"]),
                "rounds_completed": len(completed),
                "participating_brands": sorted(recorder.brands),
                "privacy": privacy_section(cfg, recorder, spent),
                "personalisation": personalisation_section(cfg, uses),
                "secure_aggregation": {
                    "enabled": bool(cfg["secagg"]),
                    "protocol": "SecAgg+" if cfg["secagg"] else None,
                    "num_shares": int(cfg["secagg-num-shares"]) if cfg["secagg"] else None,
                    "reconstruction_threshold": int(cfg["secagg-threshold"]) if cfg["secagg"] else None,
                },
                "metrics_per_round": rounds,
                "final_metrics": final_metrics,
                "wall_s": round(time.monotonic() - started, 3),
            },
        )
        log(INFO, "alliance: release written to %s", path)
        if gateways:
            published = publish_release(record, gateways)
            path.with_name(f"{record['model_version']}.published.json").write_text(json.dumps(published, indent=2, sort_keys=True))
            log(INFO, "alliance: release %s recorded in the audit logs of %s and anchored on chain",
                record["model_version"], ", ".join(sorted(published)))

    return app


app = build_server_app()
