"""Federated learning benchmark: the simulated alliance in gateway databases, telco real data.

Main result (top level, task ``redeem`` = cross-brand redemption within 30 days) and ``churn``
(no purchase in the next 90 days): the population of :mod:`federation.population` written into
five brand gateway databases (``--size``, default ``default`` >= 100,000 members; ``medium`` for a
faster run), features from :mod:`federation.features` read through the gateway data layer (only
members whose ``federated_training`` consent is granted; the same rows for every setting), trained
as of T = window start + 365 days.

Held-out rows: the brands' members as of several later dates (rolling monthly windows,
:func:`federation.population.held_out_as_ofs`), pooled per brand.  The first is T + the label's
horizon, so every training label is observed by then; the last one's label window ends inside the
simulated 18 months: 5 windows for redeem, 1 for churn (90-day label).  A small brand has a few
hundred members, so its per-brand AUC comes with a 95% interval of the federated-minus-local gain
from a bootstrap over members (rows of one member in several windows are resampled together).

Settings, each evaluated on the same held-out rows: ``centralized`` (pooled training rows, only
possible in simulation), ``local-only`` (each brand's own model on its own rows), ``federated``
(Flower simulation, 20 rounds x 5 brands), for both model families: logistic regression (FedAvg)
and XGBoost (FedXgbBagging: one tree per brand and round, each brand's eta scaled by its share of
the rows, so a round is about one boosting step over the pooled rows).  Centralized and local-only
get the same model and the same number of passes (epochs; boosting steps at the full eta) as the
federated run.  The family with the higher pooled held-out AUC of the federated model
is selected per task, as the issue asks, and the headline keys are that family's:
``auc_centralized``, ``auc_federated``, ``auc_local_only`` (AUC over all brands' held-out rows
pooled; for local-only, of the scores each brand gets from its own model, which also separates the
brands' base rates, something a global model without a brand feature cannot do; ``*_mean_brand``:
the mean of the per-brand AUCs), ``min_gain_small_brands`` (federated minus local-only AUC, the worst brand
below median size; ``..._vs_best_local`` takes, per brand, the better of the two local families).
``auc_personalised``: each brand scoring with its own personal model of the selected family's release
(:mod:`federation.personalise`, mixed by each brand on its validation members, which the federated
rounds leave out; rebuilt here and checked to be the model the brand kept); ``min_gain_small_brands_personalised``:
personalised minus the best local-only model of either family (the better one on the held-out rows),
the worst brand with fewer than 1,000 members (``min_gain_small_brands_centralized``: the same for the
centralized model of the better family, the headroom pooled data would give there); ``brands_worse_than_local``: brands whose 95% interval
of that gain lies below zero (``brands_below_local``: whose point estimate does).
The other family's figures are under ``families``.  DP-SGD (``auc_dp_eps{1,4,8}``, delta 1e-5),
FedProx and SecAgg+ exist for logistic regression only, so they and ``dp_eps8_relative_loss`` are
measured against the logistic-regression FedAvg.  ``wall_s_20_rounds``: the selected family's
20 rounds x 5 brands in simulation.  The population is cached under
``var/bench/population-<size>-s<seed>`` (rebuilt when the behavioural model's version changed, or
with ``--fresh``).

``telco``: the IBM Telco churn sample split into 4 brands by PaymentMethod, the same settings on a
fixed per-brand 80/20 split; ``telco_hetero``: the same sample split into 3 brands by Contract, whose
churn base rates differ strongly (about 43% month-to-month, 11% one-year, 3% two-year: a prepaid
carrier, a mainstream one and a contract carrier), where one global model cannot fit every brand.  ``--with-synthetic``: the seeded numpy alliance, with a byzantine
brand against FedAvg and FedMedian.  Plots (AUC per round per setting, per-brand bars) go to
var/bench/.  ``psi_overlap_100k_s`` and ``..._bytes``: the audience-overlap protocol on two sets of
100,000 members (``--psi-only``: that alone).

Run: ``python bench/federation.py [--size default|medium|small] [--seed 7] [--quick] [--core] [--skip-telco]
[--with-synthetic] [--fresh] [--psi-only]`` (``--core``: no DP / FedProx / SecAgg runs; the result also goes to
var/bench/federation-<size>[-core].json).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("FLWR_HOME", str(ROOT / "var" / "flwr"))
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import logging  # noqa: E402

import numpy as np  # noqa: E402

from federation import models, personalise  # noqa: E402
from federation.config import effective  # noqa: E402
from federation.data import BrandData, all_brands  # noqa: E402
from federation.simulation import simulate  # noqa: E402

OUT = ROOT / "var" / "bench"
QUICK = "--quick" in sys.argv
ROUNDS = 5 if QUICK else 20
BOOTSTRAP = 1000
FAMILIES = {"logreg": {"model": "logreg", "strategy": "fedavg"}, "xgb": {"model": "xgb", "strategy": "xgb-bagging"}}

Predict = Callable[[np.ndarray], np.ndarray]


def _arg(name: str, default: str) -> str:
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return default


SIZE = _arg("--size", "default")
SEED = int(_arg("--seed", "7"))


# --------------------------------------------------------------------------- models and metrics


def _predictor(kind: str, blob: bytes) -> Predict:
    if kind == "xgb":
        return lambda X: models.xgb_predict(blob, X)
    params = models.deserialise_logreg(blob)
    return lambda X: models.lr_predict(params, X)


def fit(kind: str, X: np.ndarray, y: np.ndarray, cfg: dict) -> Predict:
    """The family's model trained on these rows alone, with as many passes as the federated run
    (XGBoost: rounds x local rounds trees at the full eta, as many boosting steps as bagging takes)."""
    if kind == "xgb":
        params = models.xgb_params(float(cfg["xgb-eta"]), int(cfg["xgb-max-depth"]), int(cfg["seed"]))
        return _predictor(kind, models.xgb_fit_centralized(X, y, rounds=ROUNDS * int(cfg["xgb-local-rounds"]), params=params))
    p = models.lr_fit_centralized(X, y, epochs=ROUNDS * int(cfg["local-epochs"]), lr=float(cfg["lr"]),
                                  batch_size=int(cfg["batch-size"]), l2=float(cfg["l2"]), seed=int(cfg["seed"]))
    return lambda Xt: models.lr_predict(p, Xt)


def pooled_auc(brands: list[BrandData], scores: dict[str, np.ndarray]) -> float:
    return models.roc_auc(np.concatenate([b.y_test for b in brands]), np.concatenate([scores[b.brand_id] for b in brands]))


def gain_interval(b: BrandData, s_fed: np.ndarray, s_loc: np.ndarray, seed: int = 0) -> list[float]:
    """95% bootstrap interval of AUC(s_fed) - AUC(s_loc) (federated or personalised against local-only) on
    the brand's held-out rows, resampling members (a member's rows in several windows stay together)."""
    _, member = np.unique(np.asarray(b.test_row_ids), return_inverse=True)
    n_members = int(member.max()) + 1
    y = b.y_test.astype(bool)
    binned = []
    for s in (s_fed, s_loc):
        _, idx = np.unique(np.asarray(s, dtype=np.float64), return_inverse=True)
        binned.append(idx.reshape(-1))
    rng = np.random.default_rng(seed)
    gains = np.empty(BOOTSTRAP)
    for k in range(BOOTSTRAP):
        w = np.bincount(rng.integers(0, n_members, n_members), minlength=n_members)[member].astype(np.float64)
        aucs = [models.auc_from_histograms(np.bincount(idx, weights=w * y), np.bincount(idx, weights=w * ~y)) for idx in binned]
        gains[k] = aucs[0] - aucs[1]
    return [float(np.nanpercentile(gains, 2.5)), float(np.nanpercentile(gains, 97.5))]


# --------------------------------------------------------------------------- data


def alliance_population(size: str, seed: int) -> tuple[Path, dict]:
    """The simulated alliance of the benchmark (built once per size, seed and behavioural model)."""
    from federation import population
    from gateway.db import make_engine
    from gateway.migrations import upgrade_to_head

    work = OUT / f"population-{size}-s{seed}"
    mp = work / "population.json"
    if mp.exists() and "--fresh" not in sys.argv and json.loads(mp.read_text()).get("schema") == population.SCHEMA:
        manifest = json.loads(mp.read_text())
        for b in manifest["brands"]:  # a cached database follows the gateway's schema changes
            upgrade_to_head(make_engine(b["db_url"]))
        return mp, manifest
    import shutil

    if work.exists():
        shutil.rmtree(work)
    t0 = time.monotonic()
    manifest = population.populate(work, seed=seed, size=size, log=lambda m: print(f"[bench] {m}", file=sys.stderr))
    print(f"[bench] population {size}: {manifest['total_members']} members in {time.monotonic() - t0:.0f}s", file=sys.stderr)
    return mp, manifest


def gateway_brands(manifest: dict, task: str) -> list[BrandData]:
    """Each brand's training rows at the map's train as-of and its held-out rows pooled over the
    rolling windows, read like a ClientApp reads them (consent checked now, the read recorded)."""
    from federation import features, population
    from federation.data import read_for_training

    train_at = features.parse_as_of(manifest["train_as_of"])
    held_out = population.held_out_as_ofs(features.LABEL_DAYS[task], train_at)
    out = []
    for b in manifest["brands"]:
        train, *tests = read_for_training(b["db_url"], [train_at, *held_out])
        out.append(BrandData(
            brand_id=b["brand_id"], X=train.X, y=train.labels[task],
            X_test=np.concatenate([f.X for f in tests]), y_test=np.concatenate([f.labels[task] for f in tests]),
            feature_names=list(train.feature_names), row_ids=list(train.member_refs),
            test_row_ids=[r for f in tests for r in f.member_refs],
        ))
    return out


# --------------------------------------------------------------------------- settings


def run(ov: dict, n: int, tmp: Path, name: str) -> dict:
    t0 = time.monotonic()
    rec = simulate({**ov, "num-rounds": ov.get("num-rounds", ROUNDS)}, n, release_dir=tmp / name)
    print(f"[bench] {name}: {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return rec


def federated(rec: dict, brands: list[BrandData]) -> dict:
    """A release's scores on every brand's held-out rows (the ClientApps load their rows with the same
    load_partition the yardsticks use; the release no longer carries the brands' counts)."""
    predict = _predictor(rec["model"], (Path(rec["_path"]).parent / rec["model_file"]).read_bytes())
    scores = {b.brand_id: predict(b.X_test) for b in brands}
    return {"auc": pooled_auc(brands, scores), "scores": scores, "wall_s": rec["_sim_wall_s"],
            "curve": [r.get("evaluate", {}).get("auc_pooled") for r in rec["metrics_per_round"]]}


def personalised(rec: dict, brands: list[BrandData], cfg: dict) -> dict[str, dict]:
    """Each brand's personal model of the release, rebuilt here from the same rows and seed as its
    ClientApp built it (and checked to be that very model: same SHA-256 as the release records), with
    its scores on the brand's held-out rows."""
    blob = (Path(rec["_path"]).parent / rec["model_file"]).read_bytes()
    out = {}
    for b in brands:
        adaptation = personalise.adapt(cfg, b.X, b.y, b.row_ids, rec["model"], blob)
        recorded = rec["personalisation"]["brands"][b.brand_id]
        if adaptation.model.sha256 != recorded["model_sha256"]:
            raise RuntimeError(f"{b.brand_id}: the rebuilt personal model is not the one its ClientApp kept")
        out[b.brand_id] = {"uses": adaptation.choice, "scores": adaptation.model.predict(b.X_test),
                           "validation_auc": adaptation.validation_auc}
    return out


def family_block(kind: str, brands: list[BrandData], base: dict, n: int, tmp: Path, name: str) -> dict:
    """Centralized, local-only and federated training of one model family, scored on the same rows."""
    cfg = effective(base)
    central = fit(kind, np.concatenate([b.X for b in brands]), np.concatenate([b.y for b in brands]), cfg)
    cen = {b.brand_id: central(b.X_test) for b in brands}
    loc = {b.brand_id: fit(kind, b.X, b.y, cfg)(b.X_test) for b in brands}
    rec = run({**base, **FAMILIES[kind]}, n, tmp, f"{name}-{kind}")
    fed = federated(rec, brands)
    pers = personalised(rec, brands, effective({**base, **FAMILIES[kind], "num-rounds": ROUNDS}))
    per_brand = {}
    for b in brands:
        k = b.brand_id
        per_brand[k] = {"auc_centralized": models.roc_auc(b.y_test, cen[k]), "auc_federated": models.roc_auc(b.y_test, fed["scores"][k]),
                        "auc_local_only": models.roc_auc(b.y_test, loc[k]),
                        "auc_personalised": models.roc_auc(b.y_test, pers[k]["scores"]), "personalised_uses": pers[k]["uses"]}
        per_brand[k]["gain"] = per_brand[k]["auc_federated"] - per_brand[k]["auc_local_only"]
    keys = ("auc_centralized", "auc_federated", "auc_local_only", "auc_personalised")
    return {
        "auc_centralized": pooled_auc(brands, cen), "auc_federated": fed["auc"], "auc_local_only": pooled_auc(brands, loc),
        "auc_personalised": pooled_auc(brands, {k: v["scores"] for k, v in pers.items()}),
        **{f"{key}_mean_brand": float(np.mean([v[key] for v in per_brand.values()])) for key in keys},
        "per_brand": per_brand, "wall_s_20_rounds": fed["wall_s"] if ROUNDS == 20 else None,
        "_scores": {"federated": fed["scores"], "local": loc, "personalised": {k: v["scores"] for k, v in pers.items()}},
        "_curve": fed["curve"],
    }


def task_block(brands: list[BrandData], base: dict, tmp: Path, name: str, *, full: bool) -> tuple[dict, dict]:
    n = len(brands)
    fam = {kind: family_block(kind, brands, base, n, tmp, name) for kind in FAMILIES}
    selected = max(fam, key=lambda k: fam[k]["auc_federated"])
    sel = fam[selected]
    sizes = {b.brand_id: b.n_train for b in brands}
    median = float(np.median(list(sizes.values())))
    small = [k for k, v in sizes.items() if v < median]
    gains = {}
    for b in brands:
        k = b.brand_id
        best = max(fam, key=lambda f: fam[f]["per_brand"][k]["auc_local_only"])  # the best local model of any family
        best_local = fam[best]["per_brand"][k]["auc_local_only"]
        gains[k] = {"gain": sel["per_brand"][k]["gain"],
                    "ci95": gain_interval(b, sel["_scores"]["federated"][k], sel["_scores"]["local"][k]),
                    "gain_vs_best_local": sel["per_brand"][k]["auc_federated"] - best_local,
                    "gain_personalised_vs_best_local": sel["per_brand"][k]["auc_personalised"] - best_local,
                    "gain_centralized_vs_best_local": max(f["per_brand"][k]["auc_centralized"] for f in fam.values()) - best_local,
                    "personalised_ci95": gain_interval(b, sel["_scores"]["personalised"][k], fam[best]["_scores"]["local"][k]),
                    "personalised_uses": sel["per_brand"][k]["personalised_uses"], "best_local_family": best,
                    "n_train": b.n_train, "n_members": b.n_members, "n_test": int(len(b.y_test)),
                    "n_test_positive": int(b.y_test.sum()), "n_test_members": len(set(b.test_row_ids))}
    under_1000 = [k for k, g in gains.items() if g["n_members"] < 1000]
    out: dict = {
        "model_selected": selected,
        "auc_centralized": sel["auc_centralized"],
        "auc_federated": sel["auc_federated"],
        "auc_local_only": sel["auc_local_only"],
        "auc_personalised": sel["auc_personalised"],
        "brands_under_1000_members": under_1000,
        "min_gain_small_brands_personalised": min((gains[k]["gain_personalised_vs_best_local"] for k in under_1000), default=None),
        # What pooling every brand's rows in one place attains there (the better family): the headroom a
        # federation has at its small brands over their own data.
        "min_gain_small_brands_centralized": min((gains[k]["gain_centralized_vs_best_local"] for k in under_1000), default=None),
        # Worse: the 95% interval of (personalised - best local) lies below zero; below: the point estimate does.
        "brands_worse_than_local": sum(g["personalised_ci95"][1] < 0 for g in gains.values()),
        "brands_below_local": sum(g["gain_personalised_vs_best_local"] < 0 for g in gains.values()),
        **{k: v for k, v in sel.items() if k.endswith("_mean_brand")},
        "federated_minus_centralized": sel["auc_federated"] - sel["auc_centralized"],
        "small_brands": small,
        "median_n_train": median,
        "min_gain_small_brands": min(gains[k]["gain"] for k in small) if small else None,
        "min_gain_small_brands_vs_best_local": min(gains[k]["gain_vs_best_local"] for k in small) if small else None,
        "gain_per_brand": gains,
        "per_brand": sel["per_brand"],
        "wall_s_20_rounds": sel["wall_s_20_rounds"],
        "families": {k: {key: v for key, v in f.items() if not key.startswith("_")} for k, f in fam.items()},
    }
    curves = {f"{k} ({FAMILIES[k]['strategy']})": f["_curve"] for k, f in fam.items()}
    if not full:
        return out, curves
    lr_fed = fam["logreg"]["auc_federated"]
    prox = federated(run({**base, "strategy": "fedprox"}, n, tmp, f"{name}-fedprox"), brands)
    curves["logreg (fedprox)"] = prox["curve"]
    out["auc_fedprox"] = prox["auc"]
    out["dp_model"] = "logreg (FedAvg), record-level DP-SGD inside each brand"
    for eps in (1, 4, 8):
        rec = run({**base, "dp-epsilon": float(eps), "dp-delta": 1e-5}, n, tmp, f"{name}-dp{eps}")
        r = federated(rec, brands)
        curves[f"logreg dp eps={eps}"] = r["curve"]
        out[f"auc_dp_eps{eps}"] = r["auc"]
        out[f"epsilon_spent_dp_eps{eps}"] = rec["privacy"]["epsilon_spent"]
    out["dp_eps8_relative_loss"] = (lr_fed - out["auc_dp_eps8"]) / lr_fed
    shares = {"secagg-num-shares": 3, "secagg-threshold": 2} if n < 5 else {"secagg-num-shares": 5, "secagg-threshold": 3}
    sec = federated(run({**base, "secagg": True, **shares}, n, tmp, f"{name}-secagg"), brands)
    curves["logreg secagg+"] = sec["curve"]
    out["auc_secagg"] = sec["auc"]
    out["wall_s_secagg"] = sec["wall_s"]
    return out, curves


def byzantine(base: dict, brands: list[BrandData], tmp: Path, name: str) -> dict:
    byz = {**base, "byzantine-brand": 1}
    return {f"auc_{s}_byzantine": federated(run({**byz, "strategy": s}, len(brands), tmp, f"{name}-byz-{s}"), brands)["auc"]
            for s in ("fedavg", "fedmedian")}


# --------------------------------------------------------------------------- plots


def plots(name: str, res: dict, curves: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    files = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, curve in curves.items():
        ys = [np.nan if v is None else v for v in curve]
        ax.plot(range(1, len(ys) + 1), ys, marker=".", label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("pooled AUC at the run's eval-as-of (operator)")
    ax.set_title(f"{name}: AUC per round")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = OUT / f"federation-{name}-auc-per-round.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    files.append(str(p))

    per_brand, gains = res["per_brand"], res["gain_per_brand"]
    brands = list(per_brand)
    x = np.arange(len(brands))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for off, key, label in ((-0.3, "auc_local_only", "local-only"), (-0.1, "auc_federated", "federated"),
                            (0.1, "auc_personalised", "personalised"), (0.3, "auc_centralized", "centralized")):
        ax.bar(x + off, [per_brand[b][key] for b in brands], 0.2, label=label)
    for i, b in enumerate(brands):
        lo, hi = gains[b]["ci95"]
        ax.annotate(f"{gains[b]['gain']:+.3f}\n[{lo:+.3f}, {hi:+.3f}]", (i, max(v for v in per_brand[b].values() if isinstance(v, float)) + 0.01),
                    ha="center", fontsize=6)
    ax.set_xticks(x, [f"{b}\ntrain {gains[b]['n_train']}\ntest {gains[b]['n_test']}" for b in brands], fontsize=7)
    ax.set_ylim(0.5, 1.05)
    ax.set_ylabel("AUC on the brand's own held-out rows")
    ax.set_title(f"{name} ({res['model_selected']}): per-brand AUC; federated - local-only gain [95% CI]", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", ncol=3)
    fig.tight_layout()
    p = OUT / f"federation-{name}-per-brand.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    files.append(str(p))
    return files


# --------------------------------------------------------------------------- main


def psi_overlap(n: int = 100_000) -> dict:
    """The audience-overlap protocol of gateway/services/overlap.py on two sets of `n` members (half
    shared), as the two gateways run it (its own functions, each step on the machine's cores): the
    initiator's request, the responder's setup and answer, the initiator's count. Seconds end to end
    (one after the other, as over HTTP) and the bytes exchanged."""
    import private_set_intersection.python as psi

    from gateway.services.overlap import THREADS, padded, psi_answer, psi_count, psi_request

    mine = padded([f"phone:+86138{i:08d}" for i in range(n)])
    theirs = padded([f"phone:+86138{i:08d}" for i in range(n // 2, n + n // 2)])
    began = time.monotonic()
    client, server = psi.client.CreateWithNewKey(False), psi.server.CreateWithNewKey(False)
    request = psi_request(client, mine)
    setup, response = psi_answer(server, request, theirs)
    shared = psi_count(client, setup, response)
    seconds = time.monotonic() - began
    assert shared == n // 2, shared
    return {f"psi_overlap_{n // 1000}k_s": round(seconds, 2), "psi_threads": THREADS,
            f"psi_overlap_{n // 1000}k_bytes": len(request.SerializeToString()) + len(setup.SerializeToString()) + len(response.SerializeToString())}


def main() -> None:
    from federation import features, population

    if "--psi-only" in sys.argv:
        print(json.dumps(psi_overlap()))
        return

    logging.getLogger("flwr").setLevel(logging.WARNING)
    logging.getLogger("absl").setLevel(logging.ERROR)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="alliance-bench-"))
    full = "--core" not in sys.argv  # --core: centralized, local-only, federated (both families) only
    mp, manifest = alliance_population(SIZE, SEED)
    result: dict = {"rounds": ROUNDS, "task": "redeem"}
    files: list[str] = []
    for task in ("redeem", "churn"):
        base = {"data-source": "gateway", "seed": 7, "gateway-map": str(mp), "secagg-max-weight": 1_000_000.0, "task": task}
        block, curves = task_block(gateway_brands(manifest, task), base, tmp, f"alliance-{task}", full=full)
        block["held_out_as_of"] = [t.date().isoformat() for t in population.held_out_as_ofs(
            features.LABEL_DAYS[task], features.parse_as_of(manifest["train_as_of"]))]
        files += plots(f"alliance-{task}", block, curves)
        if task == "redeem":
            result.update(block)
        else:
            result["churn"] = block
    result["population"] = {k: manifest[k] for k in ("schema", "size", "seed", "persons", "total_members", "train_as_of", "wall_s")} | {
        "brands": {b["brand_id"]: b["counts"]["members"] for b in manifest["brands"]}}
    if "--skip-telco" not in sys.argv:
        for name, split, n in (("telco", "payment", 4), ("telco_hetero", "contract", 3)):
            base = {"data-source": "telco", "telco-split": split, "seed": 7}
            block, curves = task_block(all_brands(base, n), base, tmp, name, full=False)
            result[name] = {"split_by": split, **block}
            files += plots(name, block, curves)
    if "--with-synthetic" in sys.argv:
        base = {"data-source": "synthetic", "seed": 7}
        brands = all_brands(base, 5)
        synthetic, curves = task_block(brands, base, tmp, "synthetic", full=True)
        synthetic.update(byzantine(base, brands, tmp, "synthetic"))
        result["synthetic"] = synthetic
        files += plots("synthetic", synthetic, curves)
    result.update(psi_overlap())
    result["plots"] = files
    result["bench_wall_s"] = time.monotonic() - t0
    text = json.dumps(result, indent=2, sort_keys=True, default=float)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"federation-{SIZE}{'-core' if not full else ''}.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
