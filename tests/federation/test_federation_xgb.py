"""Federated XGBoost with Flower's FedXgbBagging: every brand's tree is kept, and each brand's eta is
scaled by its share of the rows, so a round adds about one boosting step over the pooled rows.

The rounds below run the real strategy (``build_strategy`` as the ServerApp wraps it) and the real
ClientApp in this process, without Ray.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from federation import models
from federation.client_app import bagging_eta_share, build_client_app, federated_rows
from federation.config import effective
from federation.data import load_partition
from federation.server_app import RunRecorder, _announce_row_counts, _instrument, build_strategy

pytestmark = pytest.mark.usefixtures("task_identity")

BAGGING = {"data-source": "synthetic", "model": "xgb", "strategy": "xgb-bagging", "synthetic-n": 3000}
BRANDS = 3


def _ctx(pid: int) -> Context:
    return Context(run_id=1, node_id=pid + 1, node_config={"partition-id": pid, "num-partitions": BRANDS},
                   state=RecordDict(), run_config=dict(BAGGING))


def _trees(blob: bytes) -> list[dict]:
    return json.loads(blob)["learner"]["gradient_booster"]["model"]["trees"]


def _leaves(tree: dict) -> np.ndarray:
    return np.asarray([v for v, left in zip(tree["split_conditions"], tree["left_children"], strict=True) if left == -1])


class _Grid:
    def get_node_ids(self) -> list[int]:
        return [pid + 1 for pid in range(BRANDS)]


def test_eta_share_is_the_brands_share_of_last_rounds_rows_and_equal_in_round_one() -> None:
    assert bagging_eta_share(250, {"train-examples-total": 1000, "train-brands": 3}) == 0.25
    assert bagging_eta_share(250, {"train-examples-total": 0, "train-brands": 4}) == 0.25
    assert bagging_eta_share(250, {}) == 1.0  # a lone brand outside a bagging round: plain boosting


def test_a_brands_tree_is_its_full_eta_tree_scaled_by_its_share() -> None:
    ctx = _ctx(0)
    n = federated_rows(effective(ctx.run_config), load_partition(ctx)).n_train  # its validation members stay out
    app = build_client_app()

    def tree(total: int) -> dict:
        msg = Message(RecordDict({"arrays": ArrayRecord({"0": Array(np.zeros(0, dtype=np.uint8))}),
                                  "config": ConfigRecord({"server-round": 2, "train-brands": BRANDS, "train-examples-total": total})}),
                      dst_node_id=1, message_type="train")
        reply = app(msg, ctx)
        assert not reply.has_error(), reply.error
        (only,) = _trees(reply.content["arrays"]["0"].numpy().tobytes())
        return only

    full, quarter = tree(n), tree(4 * n)
    assert full["split_indices"] == quarter["split_indices"]  # the same tree ...
    np.testing.assert_allclose(_leaves(quarter), 0.25 * _leaves(full), rtol=1e-5)  # ... at a quarter of the step


def test_bagging_rounds_keep_every_brands_tree_and_announce_the_noisy_row_total() -> None:
    cfg = effective(BAGGING)
    recorder = RunRecorder()
    strategy = _announce_row_counts(_instrument(build_strategy(cfg, BRANDS), recorder), recorder)
    app = build_client_app()
    contexts = {pid + 1: _ctx(pid) for pid in range(BRANDS)}
    n_rows = sum(federated_rows(cfg, load_partition(c)).n_train for c in contexts.values())
    arrays = ArrayRecord({"0": Array(np.zeros(0, dtype=np.uint8))})
    rounds = 3
    for server_round in range(1, rounds + 1):
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord({"num-rounds": rounds}), _Grid()))
        assert len(messages) == BRANDS
        for msg in messages:
            config = msg.content["config"]
            assert config["train-brands"] == BRANDS
            # the sum of the brands' noisy counts (their weights): near the rows, no brand's count in it
            total = config["train-examples-total"]
            assert total == 0 if server_round == 1 else abs(total - n_rows) < 150
        replies = [app(msg, contexts[msg.metadata.dst_node_id]) for msg in messages]
        arrays, _ = strategy.aggregate_train(server_round, replies)
    blob = arrays["0"].numpy().tobytes()
    assert len(_trees(blob)) == rounds * BRANDS  # one tree per brand and round, none dropped
    brands = [load_partition(c) for c in contexts.values()]
    auc = models.roc_auc(np.concatenate([b.y_test for b in brands]),
                         models.xgb_predict(blob, np.concatenate([b.X_test for b in brands])))
    assert auc > 0.7, auc


def test_bagging_refuses_local_rounds_whose_trees_flower_would_drop() -> None:
    with pytest.raises(ValueError, match="xgb-local-rounds = 1"):
        build_strategy(effective({**BAGGING, "xgb-local-rounds": 2}), BRANDS)
    build_strategy(effective({**BAGGING, "strategy": "xgb-cyclic", "xgb-local-rounds": 2}), BRANDS)
