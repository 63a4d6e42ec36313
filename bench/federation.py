"""Federated learning benchmark: the simulated alliance in gateway databases, telco real data.

Main result (top level, task ``redeem`` = cross-brand redemption within 30 days) and ``churn``
(no purchase in the next 90 days): the population of :mod:`federation.population` written into
five brand gateway databases (``--size``, default ``default`` >= 100,000 members; ``medium`` for a
faster run), features from :mod:`federation.features` through the ``gateway`` data source,
trained as of T = window start + 365 days and evaluated on the held-out window as of T + 90 days.
Keys: ``auc_centralized`` (pooled rows, only possible in simulation), ``auc_federated`` (FedAvg,
20 rounds), ``auc_local_only`` (mean over brands of each brand's own model on its own rows),
``min_gain_small_brands`` (federated minus local-only AUC, the worst brand below median size),
``auc_dp_eps{1,4,8}`` (record-level DP-SGD, delta 1e-5), ``dp_eps8_relative_loss``, ``auc_secagg``
(SecAgg+), ``wall_s_20_rounds`` (20 rounds x 5 brands in simulation).  The population is cached
under ``var/bench/population-<size>-s<seed>`` (``--fresh`` rebuilds it).

Phase 1 (kept):
Prints ONE JSON object.  ``telco``: the IBM Telco churn sample split into 4 brands by
PaymentMethod: centralized (pooled rows, only possible in simulation; same model family),
federated (Flower simulation, FedAvg) and local-only (each brand's own model on its own test
rows) AUC, all on the same fixed per-brand 80/20 split; XGBoost alongside, and the better model
picked.  ``synthetic``: a seeded 5-brand non-IID alliance: FedAvg vs FedProx vs XGBoost, DP-SGD
at epsilon 1/4/8 (delta 1e-5), SecAgg+, and the wall time of 20 rounds x 5 brands.
Plots (AUC per round per setting, per-brand bars) go to var/bench/.

Run: ``python bench/federation.py [--size default|medium|small] [--seed 7] [--quick] [--core] [--skip-telco]
[--with-synthetic]`` (``--core``: no DP / SecAgg runs; the result goes to var/bench/federation-<size>[-core].json).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("FLWR_HOME", str(ROOT / "var" / "flwr"))
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import logging  # noqa: E402

import numpy as np  # noqa: E402

from federation import models  # noqa: E402
from federation.config import effective  # noqa: E402
from federation.data import BrandData, all_brands  # noqa: E402
from federation.simulation import simulate  # noqa: E402

OUT = ROOT / "var" / "bench"
QUICK = "--quick" in sys.argv
ROUNDS = 5 if QUICK else 20


def _arg(name: str, default: str) -> str:
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return default


SIZE = _arg("--size", "default")
SEED = int(_arg("--seed", "7"))


def _model(rec: dict) -> tuple[str, bytes]:
    blob = (Path(rec["_path"]).parent / rec["model_file"]).read_bytes()
    return rec["model"], blob


def _predict(kind: str, blob: bytes, X: np.ndarray) -> np.ndarray:
    if kind == "xgb":
        return models.xgb_predict(blob, X)
    return models.lr_predict(models.deserialise_logreg(blob), X)


def _pooled_test(brands: list[BrandData]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([b.X_test for b in brands]), np.concatenate([b.y_test for b in brands])


def evaluate_release(rec: dict, brands: list[BrandData]) -> dict:
    kind, blob = _model(rec)
    X, y = _pooled_test(brands)
    per_brand = {b.brand_id: models.roc_auc(b.y_test, _predict(kind, blob, b.X_test)) for b in brands}
    curve = [r.get("evaluate", {}).get("auc_pooled") for r in rec["metrics_per_round"]]
    return {"auc": models.roc_auc(y, _predict(kind, blob, X)), "per_brand": per_brand, "curve": curve, "wall_s": rec["_sim_wall_s"]}


def centralized(brands: list[BrandData], cfg: dict, kind: str) -> float:
    X = np.concatenate([b.X for b in brands])
    y = np.concatenate([b.y for b in brands])
    Xt, yt = _pooled_test(brands)
    if kind == "xgb":
        params = models.xgb_params(float(cfg["xgb-eta"]), int(cfg["xgb-max-depth"]), int(cfg["seed"]))
        blob = models.xgb_fit_centralized(X, y, rounds=ROUNDS * int(cfg["xgb-local-rounds"]), params=params)
        return models.roc_auc(yt, models.xgb_predict(blob, Xt))
    p = models.lr_fit_centralized(X, y, epochs=ROUNDS * int(cfg["local-epochs"]), lr=float(cfg["lr"]), batch_size=int(cfg["batch-size"]), l2=float(cfg["l2"]), seed=int(cfg["seed"]))
    return models.roc_auc(yt, models.lr_predict(p, Xt))


def local_only(brands: list[BrandData], cfg: dict) -> dict[str, float]:
    out = {}
    for b in brands:
        p = models.lr_fit_centralized(b.X, b.y, epochs=ROUNDS * int(cfg["local-epochs"]), lr=float(cfg["lr"]), batch_size=int(cfg["batch-size"]), l2=float(cfg["l2"]), seed=int(cfg["seed"]))
        out[b.brand_id] = models.roc_auc(b.y_test, models.lr_predict(p, b.X_test))
    return out


def run(ov: dict, n: int, tmp: Path, name: str) -> dict:
    t0 = time.monotonic()
    rec = simulate({**ov, "num-rounds": ov.get("num-rounds", ROUNDS)}, n, release_dir=tmp / name)
    print(f"[bench] {name}: {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return rec


def task_block(source: str, n: int, tmp: Path, *, full: bool, extra: dict | None = None, name: str | None = None) -> tuple[dict, dict]:
    base = {"data-source": source, "seed": 7, **(extra or {})}
    source = name or source
    cfg = effective(base)
    brands = all_brands(base, n)
    curves: dict[str, list] = {}
    out: dict = {"brands": {b.brand_id: {"n_train": b.n_train, "n_test": int(len(b.y_test))} for b in brands}}

    out["auc_centralized"] = centralized(brands, cfg, "logreg")
    loc = local_only(brands, cfg)
    out["auc_local_only"] = float(np.mean(list(loc.values())))
    out["auc_local_only_per_brand"] = loc

    fed_rec = run({**base, "strategy": "fedavg"}, n, tmp, f"{source}-fedavg")
    fed = evaluate_release(fed_rec, brands)
    curves["fedavg"] = fed["curve"]
    out["auc_federated"] = fed["auc"]
    out["auc_federated_per_brand"] = fed["per_brand"]
    out["wall_s"] = fed["wall_s"]
    out["federated_minus_centralized"] = fed["auc"] - out["auc_centralized"]

    sizes = {b.brand_id: b.n_train for b in brands}
    median = float(np.median(list(sizes.values())))
    small = [k for k, v in sizes.items() if v < median]
    out["min_gain_small_brands"] = min(fed["per_brand"][k] - loc[k] for k in small) if small else None

    out["auc_centralized_xgb"] = centralized(brands, cfg, "xgb")
    xgb_rec = run({**base, "model": "xgb", "strategy": "xgb-bagging"}, n, tmp, f"{source}-xgb")
    xgb = evaluate_release(xgb_rec, brands)
    curves["xgb-bagging"] = xgb["curve"]
    out["auc_federated_xgb"] = xgb["auc"]
    out["auc_federated_xgb_per_brand"] = xgb["per_brand"]
    out["model_selected"] = "xgb" if xgb["auc"] > fed["auc"] else "logreg"
    out["small_brands"] = small
    out["gain_per_brand"] = {k: fed["per_brand"][k] - loc[k] for k in loc}

    if full:
        prox = evaluate_release(run({**base, "strategy": "fedprox"}, n, tmp, f"{source}-fedprox"), brands)
        curves["fedprox"] = prox["curve"]
        out["auc_fedavg"] = fed["auc"]
        out["auc_fedprox"] = prox["auc"]
        out["auc_xgb"] = xgb["auc"]
        for eps in (1, 4, 8):
            rec = run({**base, "dp-epsilon": float(eps), "dp-delta": 1e-5}, n, tmp, f"{source}-dp{eps}")
            r = evaluate_release(rec, brands)
            curves[f"dp-eps{eps}"] = r["curve"]
            out[f"auc_dp_eps{eps}"] = r["auc"]
            out[f"epsilon_spent_dp_eps{eps}"] = rec["privacy"]["epsilon_spent"]
        out["dp_eps8_relative_loss"] = (fed["auc"] - out["auc_dp_eps8"]) / fed["auc"]
        sec_rec = run({**base, "secagg": True, "secagg-num-shares": 3 if n < 5 else 5, "secagg-threshold": 2 if n < 5 else 3}, n, tmp, f"{source}-secagg")
        sec = evaluate_release(sec_rec, brands)
        curves["secagg+"] = sec["curve"]
        out["auc_secagg"] = sec["auc"]
        out["wall_s_secagg"] = sec["wall_s"]
        out["wall_s_20_rounds"] = fed["wall_s"] if ROUNDS == 20 else None
        if source.startswith("gateway"):
            return out, curves
        byz = {**base, "byzantine-brand": 1}
        out["auc_fedavg_byzantine"] = evaluate_release(run({**byz, "strategy": "fedavg"}, n, tmp, f"{source}-byz-fedavg"), brands)["auc"]
        out["auc_fedmedian_byzantine"] = evaluate_release(run({**byz, "strategy": "fedmedian"}, n, tmp, f"{source}-byz-fedmedian"), brands)["auc"]
    return out, curves


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
    ax.axhline(res["auc_centralized"], color="k", ls="--", lw=1, label="centralized (logreg)")
    ax.axhline(res["auc_local_only"], color="grey", ls=":", lw=1, label="local-only mean")
    ax.set_xlabel("round")
    ax.set_ylabel("pooled held-out AUC (operator histogram)")
    ax.set_title(f"{name}: AUC per round")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = OUT / f"federation-{name}-auc-per-round.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    files.append(str(p))

    brands = list(res["auc_local_only_per_brand"])
    x = np.arange(len(brands))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, [res["auc_local_only_per_brand"][b] for b in brands], 0.4, label="local-only")
    ax.bar(x + 0.2, [res["auc_federated_per_brand"][b] for b in brands], 0.4, label="federated (FedAvg)")
    ax.set_xticks(x, [f"{b}\n(n={res['brands'][b]['n_train']})" for b in brands], fontsize=7)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("AUC on the brand's own test rows")
    ax.set_title(f"{name}: per-brand AUC")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = OUT / f"federation-{name}-per-brand.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    files.append(str(p))
    return files


def alliance_population(size: str, seed: int) -> tuple[Path, dict]:
    """The simulated alliance of the benchmark (built once per size and seed, then reused)."""
    from federation import population

    work = OUT / f"population-{size}-s{seed}"
    mp = work / "population.json"
    if mp.exists() and "--fresh" not in sys.argv:
        return mp, json.loads(mp.read_text())
    import shutil

    if work.exists():
        shutil.rmtree(work)
    t0 = time.monotonic()
    manifest = population.populate(work, seed=seed, size=size, log=lambda m: print(f"[bench] {m}", file=sys.stderr))
    print(f"[bench] population {size}: {manifest['total_members']} members in {time.monotonic() - t0:.0f}s", file=sys.stderr)
    return mp, manifest


def main() -> None:
    logging.getLogger("flwr").setLevel(logging.WARNING)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="alliance-bench-"))
    mp, manifest = alliance_population(SIZE, SEED)
    extra = {"gateway-map": str(mp), "secagg-max-weight": 1_000_000.0}
    full = "--core" not in sys.argv  # --core: centralized, local-only, FedAvg and XGBoost only (no DP / SecAgg runs)
    redeem, redeem_curves = task_block("gateway", 5, tmp, full=full, extra={**extra, "task": "redeem"}, name="gateway-redeem")
    churn, churn_curves = task_block("gateway", 5, tmp, full=full, extra={**extra, "task": "churn"}, name="gateway-churn")
    if not full:
        for block in (redeem, churn):
            block["wall_s_20_rounds"] = block["wall_s"] if ROUNDS == 20 else None
    files = plots("alliance-redeem", redeem, redeem_curves) + plots("alliance-churn", churn, churn_curves)
    result = {
        "rounds": ROUNDS,
        "task": "redeem",
        **redeem,
        "churn": churn,
        "population": {k: manifest[k] for k in ("size", "seed", "persons", "total_members", "train_as_of", "eval_as_of", "wall_s")}
        | {"brands": {b["brand_id"]: b["counts"]["members"] for b in manifest["brands"]}},
    }
    if "--skip-telco" not in sys.argv:
        telco, telco_curves = task_block("telco", 4, tmp, full=False)
        result["telco"] = telco
        files += plots("telco", telco, telco_curves)
    if "--with-synthetic" in sys.argv:
        synthetic, syn_curves = task_block("synthetic", 5, tmp, full=True)
        result["synthetic"] = synthetic
        files += plots("synthetic", synthetic, syn_curves)
    result["plots"] = files
    result["bench_wall_s"] = time.monotonic() - t0
    text = json.dumps(result, indent=2, sort_keys=True, default=float)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"federation-{SIZE}{'-core' if not full else ''}.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
