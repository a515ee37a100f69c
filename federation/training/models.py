"""The approved model catalogue: a run names a model id, never ships model code.

Every model uses GroupNorm (or no normalisation): BatchNorm mixes samples in a
batch, which breaks per-sample gradient clipping and so DP-SGD.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """What a model needs to know about its input to be built."""

    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 2
    in_features: int = 0  # tabular models only


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class SmallCNN(nn.Module):
    """Three conv blocks with GroupNorm: ~25k parameters, quick under DP on one CPU core.

    `activation` tanh is the bounded activation of Papernot et al. (2021, "Tempered
    sigmoid activations for deep learning with differential privacy"): under clipping
    and noise it keeps activations (and so gradients) from exploding, which ReLU's do.
    """

    def __init__(self, spec: ModelSpec, width: int = 16,
                 activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        w, act = width, activation
        self.features = nn.Sequential(
            nn.Conv2d(spec.in_channels, w, 3, padding=1), nn.GroupNorm(4, w), act(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), act(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), act(),
            nn.AdaptiveAvgPool2d(3),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * w * 9, 32), act(), nn.Linear(32, spec.num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resnet18_gn(spec: ModelSpec) -> nn.Module:
    """torchvision ResNet-18 with GroupNorm; for 28×28 inputs the stem is a 3×3 stride-1
    conv without max-pool (as in MedMNIST v2), larger images keep the ImageNet stem."""
    from torchvision.models import resnet18

    model = resnet18(
        weights=None,
        num_classes=spec.num_classes,
        norm_layer=lambda c: nn.GroupNorm(32 if c % 32 == 0 else _groups(c), c),
    )
    if spec.image_size <= 64:
        model.conv1 = nn.Conv2d(spec.in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif spec.in_channels != 3:
        model.conv1 = nn.Conv2d(spec.in_channels, 64, 7, stride=2, padding=3, bias=False)
    # Opacus cannot hook in-place activations that reuse their input buffer.
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model


class MLP(nn.Module):
    """Two hidden layers for clinical tables (standardised numeric features)."""

    def __init__(self, spec: ModelSpec, hidden: int = 64) -> None:
        super().__init__()
        if spec.in_features <= 0:
            raise ValueError("an MLP needs in_features > 0")
        self.net = nn.Sequential(
            nn.Linear(spec.in_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, spec.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def logistic_regression(spec: ModelSpec) -> nn.Module:
    """Multinomial logistic regression: one linear layer (softmax in the loss)."""
    if spec.in_features <= 0:
        raise ValueError("logistic regression needs in_features > 0")
    return nn.Linear(spec.in_features, spec.num_classes)


MODELS: dict[str, tuple[str, Callable[[ModelSpec], nn.Module]]] = {
    "cnn-gn": ("imaging", SmallCNN),
    "cnn-gn-tanh": ("imaging", partial(SmallCNN, activation=nn.Tanh)),
    "resnet18-gn": ("imaging", resnet18_gn),
    "mlp": ("clinical", MLP),
    "logreg": ("clinical", logistic_regression),
}
"""model id -> (dataset kind it trains on, builder)."""


def model_kind(model_id: str) -> str:
    """'imaging' or 'clinical'; raises ValueError naming the catalogue for unknown ids."""
    if model_id not in MODELS:
        raise ValueError(f"unknown model {model_id!r}; approved: {', '.join(sorted(MODELS))}")
    return MODELS[model_id][0]


def build_model(model_id: str, spec: ModelSpec, *, seed: int | None = None) -> nn.Module:
    """Build a model from the catalogue; the same seed gives the same initial weights."""
    model_kind(model_id)
    if seed is not None:
        torch.manual_seed(seed)
    return MODELS[model_id][1](spec)
