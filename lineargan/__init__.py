"""lineargan: reproduce "Linear Semantics in Generative Adversarial Networks" (Xu & Zheng, CVPR 2021).

This package is the science layer (models, extractors, metrics, training, rendering) in plain
PyTorch. It never imports Prefect: orchestration lives in ``tasks/`` and ``flows/``.
"""

__version__ = "0.1.0"
