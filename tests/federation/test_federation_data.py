"""The data-source seam: telco split by PaymentMethod, synthetic non-IID brands, no pooled statistics."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from federation import data
from federation.config import DEFAULTS, FLWR_APP_TOML


def _ctx(pid: int, n: int, **run_config: object) -> Context:
    return Context(run_id=1, node_id=pid + 1, node_config={"partition-id": pid, "num-partitions": n}, state=RecordDict(), run_config=dict(run_config))


def test_telco_brands_are_payment_methods_with_a_fixed_disjoint_split() -> None:
    brands = [data.load_partition(_ctx(k, 4, **{"data-source": "telco", "seed": 3})) for k in range(4)]
    with open(data.TELCO_CSV, newline="") as fh:
        rows = {r["customerID"]: r for r in csv.DictReader(fh)}
    seen: set[str] = set()
    for method, b in zip(data.TELCO_BRANDS, brands, strict=True):
        ids = b.row_ids + b.test_row_ids
        assert all(rows[i]["PaymentMethod"] == method for i in ids)
        assert not set(b.row_ids) & set(b.test_row_ids)
        assert abs(len(b.test_row_ids) / len(ids) - 0.2) < 0.01
        assert b.X.dtype == np.float32 and b.X.shape == (len(b.row_ids), len(b.feature_names))
        assert b.y.tolist() == [1 if rows[i]["Churn"] == "Yes" else 0 for i in b.row_ids]
        assert b.n_members == len(ids)
        seen |= set(ids)
    assert seen == set(rows)
    again = data.telco_brand(0, seed=3)
    assert again.test_row_ids == brands[0].test_row_ids
    assert data.telco_brand(0, seed=4).test_row_ids != brands[0].test_row_ids


def test_telco_encoding_of_a_row_does_not_depend_on_other_rows() -> None:
    """Fixed domain constants: a brand's rows encode the same alone or among everybody's rows."""
    b = data.telco_brand(2, seed=1)
    with open(data.TELCO_CSV, newline="") as fh:
        rows = {r["customerID"]: r for r in csv.DictReader(fh)}
    first = rows[b.row_ids[0]]
    assert np.allclose(np.asarray(data.encode_telco_row(first), dtype=np.float32), b.X[0])
    assert "PaymentMethod" not in " ".join(b.feature_names)
    # numeric columns land on a bounded scale without looking at the data
    assert np.abs(b.X).max() < 5


def test_synthetic_brands_are_seeded_and_non_iid() -> None:
    a = [data.load_partition(_ctx(k, 5, seed=11)) for k in range(5)]
    b = data.synthetic_brand(11, 2, 5, DEFAULTS["synthetic-n"])
    assert np.array_equal(a[2].X, b.X) and a[2].row_ids == b.row_ids
    sizes = [x.n_members for x in a]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 3 * sizes[-1]
    assert sum(sizes) == DEFAULTS["synthetic-n"]
    rates = [float(x.y.mean()) for x in a]
    assert max(rates) - min(rates) > 0.05
    means = np.stack([x.X.mean(axis=0) for x in a])
    assert np.abs(means - means.mean(axis=0)).max() > 0.3
    c = data.synthetic_brand(12, 2, 5, DEFAULTS["synthetic-n"])
    assert not np.array_equal(c.X, b.X)


def test_unknown_source_and_partition_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown data-source"):
        data.load_partition(_ctx(0, 3, **{"data-source": "nope"}))
    with pytest.raises(ValueError, match="telco split has 4 brands"):
        data.load_partition(_ctx(4, 5, **{"data-source": "telco"}))
    with pytest.raises(ValueError, match="telco split has 3 brands"):
        data.load_partition(_ctx(3, 4, **{"data-source": "telco", "telco-split": "contract"}))
    with pytest.raises(ValueError, match="unknown telco split"):
        data.load_partition(_ctx(0, 3, **{"data-source": "telco", "telco-split": "region"}))


def test_contract_split_gives_brands_with_very_different_base_rates() -> None:
    """The heterogeneous telco split: one brand per contract type, every customer in exactly one."""
    brands = data.all_brands({"data-source": "telco", "telco-split": "contract"}, 3)
    assert [b.brand_id for b in brands] == ["telco-month-to-month", "telco-one-year", "telco-two-year"]
    rates = [float(np.concatenate([b.y, b.y_test]).mean()) for b in brands]
    assert rates[0] > 0.4 and 0.08 < rates[1] < 0.15 and rates[2] < 0.05, rates
    ids = [set(b.row_ids) | set(b.test_row_ids) for b in brands]
    assert sum(map(len, ids)) == len(set().union(*ids)) == 7043  # the whole sample, no customer twice
    contract = data.telco_feature_names().index("Contract=Two year")
    assert (brands[2].X[:, contract] == 1).all() and (brands[0].X[:, contract] == 0).all()


def test_flwr_app_toml_matches_the_defaults() -> None:
    import tomllib

    doc = tomllib.loads(FLWR_APP_TOML)
    assert doc["tool"]["flwr"]["app"]["config"] == DEFAULTS
    assert doc["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "federation.server_app:app",
        "clientapp": "federation.client_app:app",
    }
