"""DeepCNN: the project's own conv-dominated network for 28x28x1 and 32x32x3 inputs (our choice).

*Leveraging Kernel Symmetry for Joint Compression and Error Mitigation in Edge
Model Transfer* (arXiv:2604.17371) tests a "DeepCNN" it does not publish. Ours: six
blocks of 3x3 conv (no bias) - BatchNorm - ReLU with widths w, w, 2w, 2w, 4w, 4w,
2x2 max pooling after blocks 1, 3 and 5, then global average pooling and one
linear layer. At w = 32 it has about 288k parameters, over 99% of them in 3x3
conv kernels, so kernel compression is what decides its size.
"""

from __future__ import annotations

from torch import nn

WIDTH_MULTIPLIERS = (1, 1, 2, 2, 4, 4)
POOL_AFTER = (0, 2, 4)  # block indices followed by 2x2 max pooling


class DeepCNN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i, mult in enumerate(WIDTH_MULTIPLIERS):
            out = width * mult
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if i in POOL_AFTER:
                layers.append(nn.MaxPool2d(2))
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))
