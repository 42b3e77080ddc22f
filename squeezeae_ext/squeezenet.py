"""Plain-PyTorch SqueezeNet 1.0 / 1.1 with torchvision's module structure and parameter names.

torchvision is not always installable (there is no CPU build of it for every torch), so the tests, the
benchmark's whole-model mode and the examples build the same network from here; ``convert()`` treats these
Fire blocks exactly like torchvision's.
"""
import torch
from torch import nn

__all__ = ["TorchvisionFire", "SqueezeNet", "squeezenet1_0", "squeezenet1_1"]


class TorchvisionFire(nn.Module):
    """The unfused Fire block, structured as torchvision.models.squeezenet.Fire."""

    def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int, expand3x3_planes: int) -> None:
        super().__init__()
        self.inplanes = inplanes
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


# (inplanes, squeeze, expand1x1, expand3x3) of each Fire, and where the 3x3/stride-2 max-pools sit.
FIRE_SHAPES = {
    "1_0": [(96, 16, 64, 64), (128, 16, 64, 64), (128, 32, 128, 128), "pool", (256, 32, 128, 128),
            (256, 48, 192, 192), (384, 48, 192, 192), (384, 64, 256, 256), "pool", (512, 64, 256, 256)],
    "1_1": [(64, 16, 64, 64), (128, 16, 64, 64), "pool", (128, 32, 128, 128), (256, 32, 128, 128), "pool",
            (256, 48, 192, 192), (384, 48, 192, 192), (384, 64, 256, 256), (512, 64, 256, 256)],
}


class SqueezeNet(nn.Module):
    """torchvision's SqueezeNet: same ``features``/``classifier`` indices, so state dicts are interchangeable."""

    def __init__(self, version: str = "1_0", num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        if version not in FIRE_SHAPES:
            raise ValueError(f"SqueezeNet: version must be '1_0' or '1_1', got {version!r}")
        self.num_classes = num_classes
        if version == "1_0":
            stem = [nn.Conv2d(3, 96, kernel_size=7, stride=2), nn.ReLU(inplace=True)]
        else:
            stem = [nn.Conv2d(3, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True)]
        layers = stem + [nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)]
        for shape in FIRE_SHAPES[version]:
            if shape == "pool":
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
            else:
                layers.append(TorchvisionFire(*shape))
        self.features = nn.Sequential(*layers)
        final_conv = nn.Conv2d(512, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.classifier(x)
        return torch.flatten(x, 1)


def squeezenet1_0(**kwargs) -> SqueezeNet:
    return SqueezeNet("1_0", **kwargs)


def squeezenet1_1(**kwargs) -> SqueezeNet:
    return SqueezeNet("1_1", **kwargs)
