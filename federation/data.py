"""The data-source seam: how a brand's ClientApp gets its own training rows.

The ClientApp calls exactly one function, :func:`load_partition`, with its Flower ``Context``;
the run config key ``data-source`` picks a registered source, and the node config says which
brand the node is (``brand-id`` and/or ``partition-id`` / ``num-partitions``; simulation sets the
last two, a deployed SuperNode gets them with ``--node-config``).  Phase 1 ships two sources:

``synthetic``
    A seeded numpy alliance of non-IID brands (unequal sizes, shifted feature distributions,
    different base rates and a brand-specific tilt of the true propensity function).  Features
    are generated on a standard scale, so no standardisation statistics are needed at all.

``telco``
    The public IBM Telco churn sample (``/work/shared/datasets/telco-customer-churn.csv``),
    split into brands by ``PaymentMethod`` (that column is then dropped: it is the brand key).
    **Encoding uses fixed domain knowledge only, never pooled statistics**: the category lists
    are the documented value sets of the dataset, and the numeric columns are scaled with fixed
    constants (tenure in months centred at 36 and divided by 24; monthly charges centred at
    $65 and divided by $30; ``log1p`` of total charges centred at 7 and divided by 1.5; a blank
    total charge, which the sample has for brand-new customers, is 0).  Each brand can therefore
    encode its rows alone.  The train/test split is fixed per brand by ``seed`` (80/20).

A source returns a :class:`BrandData`.  The ids of the rows read stay in the ClientApp (tests
assert on them); they are never put in a message.  Phase 2 registers ``gateway`` (features of
consented members read from the brand's own gateway database) with :func:`register_source`:

``gateway``
    One brand's gateway database (SQLite or PostgreSQL URL), found by the node config
    ``brand-db-url`` (+ ``brand-id``) or, by ``partition-id``, in the population map named by the
    run config ``gateway-map``.  Features and labels come from :func:`federation.features.read_features`
    (the one feature definition), training rows at ``as-of`` and held-out rows at ``eval-as-of``
    (a later, non-overlapping time window), label = run config ``task``.  Every call re-reads the
    ``federated_training`` consents and records the read in the gateway's database as a ``training``
    processing (the members read, each with the consent it relied on; see :func:`read_for_training`).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from federation.config import effective

TELCO_CSV = os.environ.get("ALLIANCE_TELCO_CSV", "/work/shared/datasets/telco-customer-churn.csv")

#: Brands of the telco split, in partition order (largest first).
TELCO_BRANDS: tuple[str, ...] = (
    "Electronic check",
    "Mailed check",
    "Bank transfer (automatic)",
    "Credit card (automatic)",
)

#: Ways to split the telco sample into brands: the column that makes a brand, and the brands in
#: partition order. ``contract`` gives brands whose churn base rates differ strongly (about 43%
#: month-to-month, 11% one-year, 3% two-year): a prepaid carrier, a mainstream one and a contract
#: carrier, where one global model cannot fit every brand's rate and drivers.
TELCO_SPLITS: dict[str, tuple[str, tuple[str, ...]]] = {
    "payment": ("PaymentMethod", TELCO_BRANDS),
    "contract": ("Contract", ("Month-to-month", "One year", "Two year")),
}

_YES_NO = ("gender", "SeniorCitizen", "Partner", "Dependents", "PhoneService", "PaperlessBilling")
_CATEGORIES: dict[str, tuple[str, ...]] = {
    "MultipleLines": ("No", "Yes", "No phone service"),
    "InternetService": ("DSL", "Fiber optic", "No"),
    "OnlineSecurity": ("No", "Yes", "No internet service"),
    "OnlineBackup": ("No", "Yes", "No internet service"),
    "DeviceProtection": ("No", "Yes", "No internet service"),
    "TechSupport": ("No", "Yes", "No internet service"),
    "StreamingTV": ("No", "Yes", "No internet service"),
    "StreamingMovies": ("No", "Yes", "No internet service"),
    "Contract": ("Month-to-month", "One year", "Two year"),
}
_NUMERIC = ("tenure", "MonthlyCharges", "TotalCharges")


@dataclass
class BrandData:
    """One brand's rows, as read by its ClientApp.

    ``X``/``y`` are the training rows, ``X_test``/``y_test`` the brand's held-out rows.
    ``row_ids`` / ``test_row_ids`` are the member (or customer) ids of those rows, kept so that
    tests can assert which members were read; they never leave the ClientApp.
    """

    brand_id: str
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]
    row_ids: list[str] = field(repr=False)
    test_row_ids: list[str] = field(repr=False)

    @property
    def n_members(self) -> int:
        """Distinct members read (train and test)."""
        return len(set(self.row_ids) | set(self.test_row_ids))

    @property
    def n_train(self) -> int:
        return int(self.X.shape[0])


SourceFn = Callable[[Mapping[str, Any], Mapping[str, Any]], BrandData]
SchemaFn = Callable[[Mapping[str, Any]], list[str]]
_SOURCES: dict[str, SourceFn] = {}
_SCHEMAS: dict[str, SchemaFn] = {}


def register_source(name: str, fn: SourceFn, schema: SchemaFn) -> None:
    """Register a data source ``fn(run_config, node_config) -> BrandData`` under ``name``.

    ``schema(run_config)`` returns the feature names without reading any member (the operator
    needs the model's input width and names to initialise and release a model).
    """
    _SOURCES[name] = fn
    _SCHEMAS[name] = schema


def feature_names_for(cfg: Mapping[str, Any]) -> list[str]:
    """Feature names of the configured source (schema only, no data)."""
    cfg = effective(dict(cfg))
    name = str(cfg["data-source"])
    if name not in _SCHEMAS:
        raise ValueError(f"unknown data-source {name!r}; registered: {sorted(_SCHEMAS)}")
    return _SCHEMAS[name](cfg)


#: The training processing a read belongs to (``run:<id>:round:<n>:<stage>``), set by the ClientApp
#: around :func:`load_partition`; the ``gateway`` source records its reads under it.
PROCESSING_REF: ContextVar[str | None] = ContextVar("processing_ref", default=None)


def load_partition(context: Any, processing_ref: str | None = None) -> BrandData:
    """The brand's data for this run, read through the source named by ``data-source``.

    ``processing_ref`` names the training round the read is for: a source that reads members'
    data from a gateway records the read under it as a ``training`` processing."""
    cfg = effective(context.run_config)
    name = str(cfg["data-source"])
    if name not in _SOURCES:
        raise ValueError(f"unknown data-source {name!r}; registered: {sorted(_SOURCES)}")
    token = PROCESSING_REF.set(processing_ref)
    try:
        return _SOURCES[name](cfg, dict(context.node_config))
    finally:
        PROCESSING_REF.reset(token)


def partition_index(node_config: Mapping[str, Any], num_brands: int | None = None) -> tuple[int, int]:
    """(partition index, number of partitions) from the node config."""
    if "partition-id" not in node_config:
        raise ValueError("node config needs partition-id (simulation sets it; SuperNodes get --node-config)")
    pid = int(node_config["partition-id"])
    n = int(node_config.get("num-partitions", num_brands or pid + 1))
    if not 0 <= pid < n:
        raise ValueError(f"partition-id {pid} outside 0..{n - 1}")
    return pid, n


# --------------------------------------------------------------------------- synthetic


def synthetic_brand_sizes(total: int, num_brands: int) -> list[int]:
    """Unequal brand sizes (geometric, ratio 0.6) summing to ``total``."""
    weights = np.array([0.6**k for k in range(num_brands)])
    sizes = np.floor(total * weights / weights.sum()).astype(int)
    sizes[0] += total - sizes.sum()
    return [int(s) for s in sizes]


SYNTHETIC_DIM = 32


def _synthetic_truth(seed: int) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng([seed, 0])
    w = rng.normal(0.0, 1.0, SYNTHETIC_DIM) * (rng.random(SYNTHETIC_DIM) < 0.7)
    return w / np.linalg.norm(w) * 2.5, -1.0


def synthetic_brand(seed: int, brand: int, num_brands: int, total: int) -> BrandData:
    """Brand ``brand`` of a seeded synthetic alliance (non-IID in size, covariates and concept)."""
    w_true, b_true = _synthetic_truth(seed)
    n = synthetic_brand_sizes(total, num_brands)[brand]
    rng = np.random.default_rng([seed, 1, brand])
    shift = rng.normal(0.0, 0.3, SYNTHETIC_DIM)  # covariate shift
    scale = rng.uniform(0.7, 1.3, SYNTHETIC_DIM)
    tilt = rng.normal(0.0, 0.08, SYNTHETIC_DIM)  # brand-specific concept shift (mild)
    bias = b_true + rng.normal(0.0, 0.3)  # different base rates
    X = (rng.normal(0.0, 1.0, (n, SYNTHETIC_DIM)) * scale + shift).astype(np.float32)
    logit = X @ (w_true + tilt) + bias + 0.8 * X[:, 0] * X[:, 1] - 0.5 * np.abs(X[:, 2])
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    ids = [f"syn-{seed}-{brand}-{i}" for i in range(n)]
    return _split(f"brand-{brand}", X, y, ids, rng.permutation(n), [f"x{j}" for j in range(SYNTHETIC_DIM)])


def _split(brand_id: str, X: np.ndarray, y: np.ndarray, ids: list[str], order: np.ndarray, feature_names: list[str]) -> BrandData:
    """The first 80% of the rows in ``order`` to train on, the rest held out."""
    cut = int(round(0.8 * len(ids)))
    tr, te = order[:cut], order[cut:]
    return BrandData(brand_id=brand_id, X=X[tr], y=y[tr], X_test=X[te], y_test=y[te], feature_names=feature_names,
                     row_ids=[ids[i] for i in tr], test_row_ids=[ids[i] for i in te])


@functools.lru_cache(maxsize=64)
def _synthetic_cached(seed: int, brand: int, num_brands: int, total: int) -> BrandData:
    return synthetic_brand(seed, brand, num_brands, total)


def _synthetic_source(cfg: Mapping[str, Any], node_config: Mapping[str, Any]) -> BrandData:
    pid, n = partition_index(node_config)
    return _synthetic_cached(int(cfg["seed"]), pid, n, int(cfg["synthetic-n"]))


# --------------------------------------------------------------------------- telco


def telco_feature_names() -> list[str]:
    names = ["is_male" if c == "gender" else c for c in _YES_NO]
    for col, cats in _CATEGORIES.items():
        names += [f"{col}={c}" for c in cats]
    names += ["tenure_scaled", "monthly_charges_scaled", "log_total_charges_scaled"]
    return names


def encode_telco_row(row: Mapping[str, str]) -> list[float]:
    """Encode one customer with fixed domain constants (no statistics of anybody else's rows)."""
    out: list[float] = []
    for col in _YES_NO:
        v = row[col]
        out.append(1.0 if v in ("Yes", "1", "Male") else 0.0)
    for col, cats in _CATEGORIES.items():
        v = row[col]
        if v not in cats:
            raise ValueError(f"unexpected {col}={v!r}")
        out += [1.0 if v == c else 0.0 for c in cats]
    tenure = float(row["tenure"])
    monthly = float(row["MonthlyCharges"])
    total = float(row["TotalCharges"]) if row["TotalCharges"].strip() else 0.0
    out += [(tenure - 36.0) / 24.0, (monthly - 65.0) / 30.0, (np.log1p(total) - 7.0) / 1.5]
    return out


@functools.lru_cache(maxsize=4)
def _telco_rows(path: str) -> tuple[dict[str, str], ...]:
    with open(path, newline="") as fh:
        return tuple(csv.DictReader(fh))


def telco_brand(brand: int | str, seed: int, path: str = TELCO_CSV, split: str = "payment") -> BrandData:
    """Brand = one value of the split's column (``TELCO_SPLITS``); only that brand's rows are encoded."""
    if split not in TELCO_SPLITS:
        raise ValueError(f"unknown telco split {split!r}; one of {sorted(TELCO_SPLITS)}")
    column, values = TELCO_SPLITS[split]
    value = values[brand] if isinstance(brand, int) else brand
    if value not in values:
        raise ValueError(f"unknown telco brand {value!r}")
    rows = [r for r in _telco_rows(path) if r[column] == value]
    X = np.asarray([encode_telco_row(r) for r in rows], dtype=np.float32)
    y = np.asarray([1 if r["Churn"] == "Yes" else 0 for r in rows], dtype=np.int64)
    ids = [r["customerID"] for r in rows]
    # Fixed split: a seeded permutation of the brand's rows ordered by customer id.
    order_by_id = np.argsort(ids, kind="stable")
    digest = int(hashlib.sha256(value.encode()).hexdigest()[:8], 16)
    perm = order_by_id[np.random.default_rng([seed, digest]).permutation(len(ids))]
    slug = value.split(" (")[0].lower().replace(" ", "-")
    return _split(f"telco-{slug}", X, y, ids, perm, telco_feature_names())


@functools.lru_cache(maxsize=16)
def _telco_cached(brand: int, seed: int, split: str) -> BrandData:
    return telco_brand(brand, seed, split=split)


def _telco_source(cfg: Mapping[str, Any], node_config: Mapping[str, Any]) -> BrandData:
    split = str(cfg["telco-split"])
    values = TELCO_SPLITS[split][1] if split in TELCO_SPLITS else ()
    if "brand-id" in node_config and str(node_config["brand-id"]) in values:
        return telco_brand(str(node_config["brand-id"]), int(cfg["seed"]), split=split)
    pid, _ = partition_index(node_config)
    if split in TELCO_SPLITS and pid >= len(values):
        raise ValueError(f"the telco split has {len(values)} brands (by {split}); partition-id {pid} is out of range")
    return _telco_cached(pid, int(cfg["seed"]), split)


register_source("synthetic", _synthetic_source, lambda cfg: [f"x{j}" for j in range(SYNTHETIC_DIM)])
register_source("telco", _telco_source, lambda cfg: telco_feature_names())


def all_brands(cfg: Mapping[str, Any], num_brands: int) -> list[BrandData]:
    """Every brand's data in one process: ONLY for simulation yardsticks (centralized / local-only)."""
    cfg = effective(dict(cfg))
    return [
        _SOURCES[str(cfg["data-source"])](cfg, {"partition-id": k, "num-partitions": num_brands})
        for k in range(num_brands)
    ]


# --------------------------------------------------------------------------- gateway (phase 2)

#: What the gateway source read last, per (db url, as-of): the member refs, for tests and audit.
_FEATURE_CACHE: dict[tuple[str, str], tuple[set[int], Any]] = {}
_ENGINES: dict[str, Any] = {}


def gateway_map(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The population map of the run config's ``gateway-map`` (a file path or inline JSON)."""
    import json

    raw = str(cfg.get("gateway-map", "") or "")
    if not raw:
        raise ValueError("data-source gateway needs run config gateway-map (population.json) or node config brand-db-url")
    return json.loads(raw) if raw.lstrip().startswith("{") else json.loads(open(raw).read())


def _engine(url: str) -> Any:
    if url not in _ENGINES:
        from gateway.db import make_engine

        _ENGINES[url] = make_engine(url)
    return _ENGINES[url]


def gateway_brand(cfg: Mapping[str, Any], node_config: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(brand id, database URL, population map or {}) of this node."""
    if "brand-db-url" in node_config:
        url = str(node_config["brand-db-url"])
        meta = gateway_map(cfg) if cfg.get("gateway-map") else {}
        return str(node_config.get("brand-id", url.rsplit("/", 2)[-2] if "/" in url else "brand")), url, meta
    meta = gateway_map(cfg)
    brands = meta["brands"]
    if "brand-id" in node_config and any(b["brand_id"] == str(node_config["brand-id"]) for b in brands):
        entry = next(b for b in brands if b["brand_id"] == str(node_config["brand-id"]))
    else:
        pid, _ = partition_index(node_config, len(brands))
        if pid >= len(brands):
            raise ValueError(f"the population map has {len(brands)} brands; partition-id {pid} is out of range")
        entry = brands[pid]
    return str(entry["brand_id"]), str(entry["db_url"]), meta


def gateway_features(url: str, as_of: Any, purpose: str = "federated_training", consented: Mapping[int, int] | None = None) -> Any:
    """The brand's :class:`federation.features.FeatureFrame` at ``as_of``, consent checked NOW.

    ``consented`` (member id -> consent seq) is the consent check the caller made; without it the
    consents are queried here.  Only members in it are returned.  Feature rows computed earlier
    (the as-of is in the past, so they do not change) are reused only when every member consented
    now was consented when they were computed; rows of members who withdrew since are dropped from
    the result *and* from the cache.  Any newly consented member triggers a full re-read (through
    the consent join in :func:`federation.features.read_features`).
    """
    from federation import features as feats

    engine = _engine(url)
    key = (url, f"{feats.parse_as_of(as_of).isoformat()}|{purpose}")
    if consented is None:
        with engine.connect() as conn:
            consented = feats.consented_members(conn, purpose)
    now_ids = set(consented)
    cached = _FEATURE_CACHE.get(key)
    # A fresh read checks the consents again in its own snapshot; a member who granted in between is
    # left out too, so that the rows returned are always within the caller's check.
    frame = feats.read_features(engine, as_of, purpose=purpose) if cached is None or not now_ids <= cached[0] else cached[1]
    keep = np.isin(frame.member_ids, np.fromiter(now_ids, dtype=np.int64, count=len(now_ids)))
    if not keep.all():
        frame = feats.FeatureFrame(frame.as_of, frame.purpose, frame.member_ids[keep],
                                   [r for r, k in zip(frame.member_refs, keep) if k], frame.X[keep],
                                   {t: y[keep] for t, y in frame.labels.items()}, frame.feature_names)
    _FEATURE_CACHE[key] = (now_ids, frame)
    return frame


def read_for_training(url: str, as_ofs: list[Any], processing_ref: str | None = None) -> list[Any]:
    """Feature frames at each of ``as_ofs`` of the members whose ``federated_training`` consent is
    granted now, and the record of that read in the gateway's database: one ``training`` processing
    covering exactly the members returned, each with the consent-log entry it relied on.

    One consent check serves every frame and the record, so they are the same set.  Without a
    ``processing_ref`` (a read outside a Flower round: the simulation's pooled yardsticks, tools) the
    read is still recorded, under ``read:<random id>``."""
    from federation import features as feats
    from gateway.services import consent as consent_svc
    from gateway.services import processings

    engine = _engine(url)
    with engine.begin() as conn:
        consent_svc.hold(conn)  # no consent changes between the check and the time recorded for it
        decided_at = datetime.now(UTC)
        consented = feats.consented_members(conn, feats.TRAINING_PURPOSE)
    frames = [gateway_features(url, at, feats.TRAINING_PURPOSE, consented) for at in as_ofs]
    read = set().union(*(f.member_ids.tolist() for f in frames))
    with engine.begin() as conn:
        processings.record(conn, "training", processing_ref or f"read:{uuid.uuid4().hex}", decided_at,
                           {m: consented[m] for m in read})
    return frames


def gateway_as_of(cfg: Mapping[str, Any], meta: Mapping[str, Any]) -> tuple[str, str]:
    import datetime as _dt

    from federation.features import parse_as_of

    train = str(cfg.get("as-of") or meta.get("train_as_of") or "")
    if not train:
        raise ValueError("data-source gateway needs run config as-of (or a population map with train_as_of)")
    test = str(cfg.get("eval-as-of") or (meta.get("eval_as_of") if not cfg.get("as-of") else "") or "")
    if not test:
        test = (parse_as_of(train) + _dt.timedelta(days=90)).isoformat()
    return train, test


def _gateway_source(cfg: Mapping[str, Any], node_config: Mapping[str, Any]) -> BrandData:
    brand_id, url, meta = gateway_brand(cfg, node_config)
    task = str(cfg["task"])
    train_at, test_at = gateway_as_of(cfg, meta)
    train, test = read_for_training(url, [train_at, test_at], PROCESSING_REF.get())
    if task not in train.labels or task not in test.labels:
        raise ValueError(f"no {task!r} labels at these as-of times (the label window is not over yet)")
    return BrandData(
        brand_id=brand_id,
        X=train.X,
        y=train.labels[task],
        X_test=test.X,
        y_test=test.labels[task],
        feature_names=list(train.feature_names),
        row_ids=list(train.member_refs),
        test_row_ids=list(test.member_refs),
    )


def keep_personal_model(cfg: Mapping[str, Any], node_config: Mapping[str, Any], *, global_sha256: str, choice: str,
                        model: bytes) -> bool:
    """Keep a brand's personal model where the brand keeps its data: the ``gateway`` source stores it in
    the brand's database (campaigns score with it); other sources keep nothing. True if stored."""
    if str(cfg["data-source"]) != "gateway":
        return False
    from gateway.services import personal

    _, url, _ = gateway_brand(cfg, node_config)
    with _engine(url).begin() as conn:
        personal.store(conn, global_sha256=global_sha256, task=str(cfg["task"]), choice=choice, model=model)
    return True


def _gateway_schema(cfg: Mapping[str, Any]) -> list[str]:
    from federation.features import FEATURE_NAMES

    return list(FEATURE_NAMES)


register_source("gateway", _gateway_source, _gateway_schema)
