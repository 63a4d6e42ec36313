"""Federated propensity models for the alliance (Flower 1.4x Message API).

``server_app`` (the alliance operator's ServerApp), ``client_app`` (one ClientApp per brand),
``data`` (the data-source seam ``load_partition(context) -> BrandData``), ``models`` (numpy
logistic regression with FedProx and DP-SGD, federated XGBoost), ``releases`` (release records),
``simulation`` (run_simulation on Ray) and ``deployment`` (SuperLink + SuperNodes, production
setup).  Run configuration keys: :mod:`federation.config`.
"""
