"""INR-Net architectures and their pixel twins, by name (``create_model("inrnet2", ...)``).

| name | model | paper |
|---|---|---|
| ``inrnet2`` / ``cnn2`` | 2 strided convs, global pooling, 2 linear layers | INR-Net-2 / 2-layer CNN |
| ``inrnet4`` / ``cnn4`` | + a residual block of 2 convs | INR-Net-4 / 4-layer CNN |
| ``inrnet3`` / ``fcn3`` | 3 convs at one resolution, dense output | INR-Net-3 / 3-layer FCN |
| ``inrnet5`` / ``fcn5`` | conv, strided conv, conv, upsample, conv + residual, head | INR-Net-5 / 5-layer FCN |
| ``inrnet_unet`` / ``unet`` | encoder-decoder, down/up-sampling with concatenated skips (4 levels) | multi-scale INR-Net (Fig. 2, right) |
| ``convert`` | a timm / torchvision CNN with its weights, converted (`inrnet.models.converted`) | INR-Net-EN (Table E.2) |

``create_model(name, pretrained=tag)`` loads weights trained in this project and shipped
inside the package (`inrnet.models.pretrained`).
"""

from inrnet.models._registry import create_model, list_models, model_config, register_model
from inrnet.models.baselines import CNNClassifier, FCNSegmenter, UNetSegmenter
from inrnet.models.inr_nets import INRNetClassifier, INRNetSegmenter, INRNetUNet, make_conv
from inrnet.models import converted  # noqa: F401  (registers "convert": pretrained CNNs, converted)

__all__ = ["create_model", "list_models", "model_config", "register_model", "INRNetClassifier", "INRNetSegmenter",
           "INRNetUNet", "CNNClassifier", "FCNSegmenter", "UNetSegmenter", "make_conv"]


@register_model("inrnet2")
def inrnet2(in_channels: int = 1, num_classes: int = 10, **kwargs) -> INRNetClassifier:
    return INRNetClassifier(in_channels, num_classes, residual_blocks=0, **kwargs)


@register_model("inrnet4")
def inrnet4(in_channels: int = 1, num_classes: int = 10, **kwargs) -> INRNetClassifier:
    return INRNetClassifier(in_channels, num_classes, residual_blocks=1, **kwargs)


@register_model("cnn2")
def cnn2(in_channels: int = 1, num_classes: int = 10, **kwargs) -> CNNClassifier:
    return CNNClassifier(in_channels, num_classes, residual_blocks=0, **kwargs)


@register_model("cnn4")
def cnn4(in_channels: int = 1, num_classes: int = 10, **kwargs) -> CNNClassifier:
    return CNNClassifier(in_channels, num_classes, residual_blocks=1, **kwargs)


@register_model("inrnet3")
def inrnet3(in_channels: int = 3, num_classes: int = 7, **kwargs) -> INRNetSegmenter:
    return INRNetSegmenter(in_channels, num_classes, multiscale=False, **kwargs)


@register_model("inrnet5")
def inrnet5(in_channels: int = 3, num_classes: int = 7, **kwargs) -> INRNetSegmenter:
    return INRNetSegmenter(in_channels, num_classes, multiscale=True, **kwargs)


@register_model("fcn3")
def fcn3(in_channels: int = 3, num_classes: int = 7, **kwargs) -> FCNSegmenter:
    return FCNSegmenter(in_channels, num_classes, multiscale=False, **kwargs)


@register_model("fcn5")
def fcn5(in_channels: int = 3, num_classes: int = 7, **kwargs) -> FCNSegmenter:
    return FCNSegmenter(in_channels, num_classes, multiscale=True, **kwargs)


@register_model("inrnet_unet")
def inrnet_unet(in_channels: int = 3, num_classes: int = 7, **kwargs) -> INRNetUNet:
    return INRNetUNet(in_channels, num_classes, **kwargs)


@register_model("unet")
def unet(in_channels: int = 3, num_classes: int = 7, **kwargs) -> UNetSegmenter:
    return UNetSegmenter(in_channels, num_classes, **kwargs)
