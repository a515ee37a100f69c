"""The approved model ids and the kind of dataset each trains on, without torch.

The portal checks a run's `model` against this registry: importing the torch-side
catalogue (`federation.training.models`, which holds the builders) would load torch
into the portal process for a name check. A test ties the two registries together.
"""

from __future__ import annotations

MODEL_KINDS: dict[str, str] = {
    "cnn-gn": "imaging",
    "cnn-gn-tanh": "imaging",
    "resnet18-gn": "imaging",
    "mlp": "clinical",
    "logreg": "clinical",
}
"""model id -> the dataset kind it trains on ('imaging' or 'clinical')."""
