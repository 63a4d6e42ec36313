"""What leaves a ClientApp: only model parameters of the model's shape and aggregate metrics.

The tests call the real ClientApp with real Flower messages and inspect the reply content.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import ndarrays_to_parameters
from flwr.common import FitIns
from flwr.compat.common import recorddict_compat as compat

from federation import models
from federation.client_app import build_client_app, federated_rows
from federation.config import effective
from federation.data import BrandData, load_partition
from federation.models import HIST_BINS

pytestmark = pytest.mark.usefixtures("task_identity")


def _ctx(pid: int, n: int, run_config: dict) -> Context:
    return Context(run_id=1, node_id=pid + 1, node_config={"partition-id": pid, "num-partitions": n}, state=RecordDict(), run_config=run_config)


def _all_bytes(content: RecordDict) -> bytes:
    """Every byte and value the reply carries, for substring searches."""
    parts: list[bytes] = []
    for rec in content.array_records.values():
        for key, arr in rec.items():
            parts += [key.encode(), arr.data]
    for rec in content.metric_records.values():
        for key, v in rec.items():
            parts += [key.encode(), repr(v).encode()]
    for rec in content.config_records.values():
        for key, v in rec.items():
            parts += [key.encode(), v if isinstance(v, bytes) else repr(v).encode()]
    return b"\n".join(parts)


def _assert_no_member_data(content: RecordDict, data: BrandData, n_trained: int) -> None:
    """``n_trained``: the rows the brand trained on (all but its validation members)."""
    blob = _all_bytes(content)
    for rid in data.row_ids[:300] + data.test_row_ids[:100]:
        assert rid.encode() not in blob, f"row id {rid} leaked"
    for rec in content.array_records.values():
        for arr in rec.values():
            a = arr.numpy()
            assert data.n_train not in a.shape and n_trained not in a.shape and len(data.y_test) not in a.shape
            if a.dtype == np.float32 and a.ndim and a.size >= data.X.shape[1]:
                # not a feature row of any member
                for row in data.X[:500]:
                    assert not np.allclose(a[: len(row)], row)
    for rec in content.metric_records.values():
        for key, v in rec.items():
            if isinstance(v, list):
                assert key in ("hist-pos", "hist-neg") and len(v) == HIST_BINS
                assert all(isinstance(c, float) for c in v)
            else:
                assert isinstance(v, (int, float))
    for rec in content.config_records.values():
        assert set(rec.keys()) == {"brand-id"}


def _lr_message(kind: str, dim: int, server_round: int = 1) -> Message:
    p = models.lr_init(dim)
    return Message(
        RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in p.items()}), "config": ConfigRecord({"server-round": server_round})}),
        dst_node_id=1,
        message_type=kind,
    )


@pytest.mark.parametrize("dp_epsilon", [0.0, 4.0])
@pytest.mark.parametrize("source", ["synthetic", "telco"])
def test_train_and_evaluate_replies_carry_only_model_and_aggregates(source: str, dp_epsilon: float) -> None:
    run_config = {"data-source": source, "num-rounds": 2, "dp-epsilon": dp_epsilon}
    ctx = _ctx(1, 3, run_config)
    data = load_partition(ctx)
    trained = federated_rows(effective(ctx.run_config), data).n_train
    app = build_client_app()
    reply = app(_lr_message("train", data.X.shape[1]), ctx)
    assert not reply.has_error(), reply.error
    c = reply.content
    assert list(c.array_records) == ["arrays"]
    arrays = c["arrays"]
    assert set(arrays) == {"w", "b"}
    assert arrays["w"].numpy().shape == (data.X.shape[1],) and arrays["b"].numpy().shape == (1,)
    assert np.any(arrays["w"].numpy() != 0)  # it trained
    m = dict(c["metrics"])
    assert set(m) == {"weight", "unit-weight"}  # no count, no loss, no DP parameter derived from the count
    assert m["weight"] != trained and abs(m["weight"] - trained) < 200  # the count with Laplace noise (scale 10)
    _assert_no_member_data(c, data, trained)

    ev = app(
        Message(RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})}), dst_node_id=1, message_type="evaluate"),
        ctx,
    )
    assert not ev.has_error(), ev.error
    assert not ev.content.array_records
    em = ev.content["metrics"]
    assert set(em) == {"weight", "unit-weight", "hist-pos", "hist-neg"} and em["weight"] == 1.0
    # Laplace noise (scale 1) on each of 100 bins: the sums are near the true counts, never equal by design
    true_pos, true_neg = models.score_histograms(data.y_test, models.lr_predict({k: arrays[k].numpy() for k in ("w", "b")}, data.X_test))
    assert abs(sum(em["hist-pos"]) - sum(true_pos)) < 60 and abs(sum(em["hist-neg"]) - sum(true_neg)) < 60
    assert [round(v) for v in em["hist-pos"]] != true_pos
    _assert_no_member_data(ev.content, data, trained)


def test_xgboost_reply_is_one_booster_and_no_rows() -> None:
    ctx = _ctx(0, 3, {"data-source": "synthetic", "model": "xgb", "strategy": "xgb-bagging"})
    data = load_partition(ctx)
    trained = federated_rows(effective(ctx.run_config), data).n_train
    app = build_client_app()
    msg = Message(
        RecordDict({"arrays": ArrayRecord({"0": Array(np.zeros(0, dtype=np.uint8))}), "config": ConfigRecord({"server-round": 1})}),
        dst_node_id=1,
        message_type="train",
    )
    reply = app(msg, ctx)
    assert not reply.has_error(), reply.error
    arr = reply.content["arrays"]["0"].numpy()
    assert arr.dtype == np.uint8
    booster = json.loads(arr.tobytes())
    assert int(booster["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"]) == 1  # one tree per round (bagging)
    _assert_no_member_data(reply.content, data, trained)


def test_legacy_fit_reply_used_by_secagg_carries_only_parameters() -> None:
    """The FitRes path that SecAgg+ masks: parameters of the model's shape and scalar metrics."""
    ctx = _ctx(2, 3, {"data-source": "synthetic", "num-rounds": 1})
    data = load_partition(ctx)
    trained = federated_rows(effective(ctx.run_config), data).n_train
    p = models.lr_init(data.X.shape[1])
    content = compat.fitins_to_recorddict(FitIns(ndarrays_to_parameters([p["w"], p["b"]]), {"server-round": 1}), keep_input=True)
    reply = build_client_app()(Message(content, dst_node_id=1, message_type="train"), ctx)
    assert not reply.has_error(), reply.error
    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    from flwr.common import parameters_to_ndarrays

    nds = parameters_to_ndarrays(fitres.parameters)
    assert [a.shape for a in nds] == [(data.X.shape[1],), (1,)]
    assert fitres.num_examples == trained  # SecAgg+'s weight: the mod masks it, then sets the plain field to 1
    assert set(fitres.metrics) == {"brand-id"}
    assert all(isinstance(v, (int, float)) or k == "brand-id" for k, v in fitres.metrics.items())
    blob = b"".join(a.tobytes() for a in nds) + repr(fitres.metrics).encode()
    assert not any(r.encode() in blob for r in data.row_ids[:300])
