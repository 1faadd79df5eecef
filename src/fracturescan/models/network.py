"""The fracture classifier: a torchvision backbone's trunk, pooling and a one-logit head.

Any torchvision classification model can serve as a backbone. One generic rule turns it into a
feature extractor: keep the model's top-level children in order, skip auxiliary heads, and stop
at the first pooling / classifier child. The kept children keep their torchvision names, so a
torchvision state dict loads into :attr:`FractureNet.features` after dropping the classifier keys
(see :mod:`fracturescan.models.weights`). Two families need a tweak the generic rule cannot see,
because torchvision does that work inside ``forward()`` rather than in a module:

* DenseNet applies the final ReLU functionally, so we append an ``nn.ReLU`` after ``norm5``;
  Grad-CAM must hook the *activated* map.
* ViT works on tokens, so a small wrapper drops the class token and folds the patch tokens back
  into a ``(N, C, h, w)`` grid.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision.models as tv_models
from torch import nn

from fracturescan.errors import ConfigError
from fracturescan.models.registry import HALF_NORMALISED, MODEL_DEFAULTS, check_arch

#: Top-level children that end the feature extractor (pooling, flattening, classifier heads).
_STOP_CHILDREN = frozenset({"avgpool", "flatten", "dropout", "fc", "classifier", "head", "heads"})
#: Auxiliary classifiers wired into the middle of GoogLeNet / Inception; not part of the trunk.
_AUX_CHILDREN = frozenset({"aux1", "aux2", "AuxLogits"})

class _ViTTokenGrid(nn.Module):
    """ViT trunk that returns its patch tokens as a ``(N, D, h, w)`` map (class token dropped).

    Attribute names match torchvision's ``VisionTransformer`` so its state dict keys load as-is.
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.encoder = vit.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed patches, run the encoder, and fold the patch tokens back into a grid."""
        patches = self.conv_proj(x)
        n, _, h, w = patches.shape
        tokens = patches.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_token.expand(n, -1, -1), tokens], dim=1)
        encoded = self.encoder(tokens)[:, 1:]
        return encoded.transpose(1, 2).reshape(n, -1, h, w)


def _builder_kwargs(arch: str) -> dict[str, object]:
    # Build the bare skeleton; the aux heads and input transform are not used by FractureNet and
    # explicit init_weights silences torchvision's FutureWarning for these two families.
    if arch in HALF_NORMALISED:
        return {"aux_logits": False, "init_weights": True}
    if arch.startswith("vit_"):
        # ViT's position embedding is sized for one input side; match the pretrained one.
        return {"image_size": MODEL_DEFAULTS[arch].input_size}
    return {}


def _head_in_features(head_modules: list[nn.Module], pooled_cells: int) -> int:
    for module in head_modules:
        for sub in module.modules():
            if isinstance(sub, nn.Linear):
                # VGG/AlexNet flatten a k x k pooled map into the first Linear; undo that.
                return sub.in_features // pooled_cells
            if isinstance(sub, nn.Conv2d):  # SqueezeNet classifies with a 1x1 conv
                return sub.in_channels
    raise ConfigError("cannot find the classifier of this backbone to size the head")


def _pooled_cells(backbone: nn.Module) -> int:
    pool = getattr(backbone, "avgpool", None)
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        size = pool.output_size
        h, w = (size, size) if isinstance(size, int) else size
        return int((h or 1) * (w or 1))
    return 1


def _split_backbone(arch: str, backbone: nn.Module) -> tuple[nn.Module, list[str], int]:
    """Return (feature extractor, dropped top-level child names, feature channels)."""
    children = list(backbone.named_children())
    kept: list[tuple[str, nn.Module]] = []
    dropped: list[str] = []
    for index, (name, child) in enumerate(children):
        if name in _AUX_CHILDREN:
            dropped.append(name)
            continue
        if name in _STOP_CHILDREN:
            dropped.extend(n for n, _ in children[index:])
            break
        if isinstance(child, nn.ModuleList):  # MaxViT loops over its blocks in forward()
            child = nn.Sequential(*child)  # same "<i>." keys, now callable in order
        kept.append((name, child))
    # Disabled aux heads are None (absent from named_children) but pretrained files carry them.
    dropped.extend(n for n in sorted(_AUX_CHILDREN) if hasattr(backbone, n) and n not in dropped)
    head_modules = [dict(children)[n] for n in dropped if n not in _AUX_CHILDREN]
    channels = _head_in_features(head_modules, _pooled_cells(backbone))
    if arch.startswith("vit_"):
        return _ViTTokenGrid(backbone), ["heads"], channels
    if arch.startswith("densenet"):
        kept.append(("relu", nn.ReLU(inplace=False)))  # not in-place: Grad-CAM hooks its output
    return nn.Sequential(OrderedDict(kept)), dropped, channels


def _first_conv(module: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d):
            return name, sub
    raise ConfigError("this backbone has no Conv2d input layer; in_channels cannot be changed")


def _replace_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child_name = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child_name, new)


def _with_in_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )


class FractureNet(nn.Module):
    """A torchvision backbone's feature map, global average pooling, and a one-logit MLP head.

    ``forward(x)`` takes ``(N, in_channels, H, W)`` normalised images and returns logits of shape
    ``(N,)`` (one score per image; ``sigmoid`` gives P(abnormal)). The head is
    ``AdaptiveAvgPool2d(1) -> Flatten -> Linear(C, hidden) -> ReLU -> Dropout -> Linear(hidden, 1)``.

    Attributes:
        arch: torchvision model name of the backbone.
        hidden, dropout, in_channels: head width, dropout probability, input channels.
        feature_channels: ``C``, channels of the final feature map.
        features: the backbone trunk, returning the final activated ``(N, C, h, w)`` map. Its
            state dict keys equal torchvision's keys for the same modules.
        head: the classifier head.
        first_conv_key: torchvision-style key of the input convolution's weight.
        dropped_backbone_keys: top-level torchvision names not used here (classifier, aux heads).
    """

    def __init__(
        self,
        arch: str = "densenet121",
        *,
        hidden: int = 256,
        dropout: float = 0.5,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        check_arch(arch)
        _check_hparams(hidden, dropout, in_channels)
        backbone = tv_models.get_model(arch, weights=None, **_builder_kwargs(arch))
        features, dropped, channels = _split_backbone(arch, backbone)
        conv_name, conv = _first_conv(features)
        if in_channels != conv.in_channels:
            _replace_module(features, conv_name, _with_in_channels(conv, in_channels))
        self.arch = arch
        self.hidden = hidden
        self.dropout = dropout
        self.in_channels = in_channels
        self.feature_channels = channels
        self.first_conv_key = f"{conv_name}.weight"
        self.dropped_backbone_keys: tuple[str, ...] = tuple(dropped)
        self.features = features
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                fc1=nn.Linear(channels, hidden),
                relu=nn.ReLU(),
                dropout=nn.Dropout(dropout),
                fc2=nn.Linear(hidden, 1),
            )
        )

    @property
    def cam_layer(self) -> nn.Module:
        """The module whose output is the final activated feature map (the Grad-CAM target)."""
        if isinstance(self.features, nn.Sequential):
            return self.features[-1]
        return self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one logit per image, shape ``(N,)``."""
        return self.head(self.features(x)).squeeze(1)

    def extra_repr(self) -> str:
        """Summarise the configuration in ``repr(model)``."""
        return f"arch={self.arch!r}, hidden={self.hidden}, in_channels={self.in_channels}"


def _check_hparams(hidden: int, dropout: float, in_channels: int) -> None:
    if not isinstance(hidden, int) or hidden < 1:
        raise ConfigError(f"hidden must be a positive integer, got {hidden!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels must be a positive integer, got {in_channels!r}")
