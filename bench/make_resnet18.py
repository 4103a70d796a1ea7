"""Run by PyTorch (2.13.0+cpu, in a scratch venv; never the project's .venv): write a
torchvision-style ResNet-18 state_dict dumped with h5py, PyTorch's outputs on seeded
inputs, the time of `torch.load` + one forward pass, and a graph spec written the way the
PyTorch module reads (integer padding, residual Adds, downsample branches).

    /work/scratch/torchenv/bin/python bench/make_resnet18.py [OUT_DIR]

Writes OUT_DIR (default bench/resnet18/, not committed: ~45 MiB) with resnet18.h5,
resnet18.io.npz (x NCHW (4,3,224,224), y0 (4,1000)), resnet18.yaml and torch_timing.json.
The module below follows torchvision.models.resnet18 exactly (same names, BasicBlock,
zero-padded 7x7/2 stem, MaxPool2d(3, 2, padding=1), 1x1/2 downsample convolutions), with
a seeded random init and BatchNorm running statistics from a few train-mode passes.
"""
import json
import os
import sys
import tempfile
import time

import h5py
import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class ResNet18(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.layer1 = self._make(64, 1)
        self.layer2 = self._make(128, 2)
        self.layer3 = self._make(256, 2)
        self.layer4 = self._make(512, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _make(self, planes, stride):
        ds = None
        if stride != 1 or self.inplanes != planes:
            ds = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                               nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, ds), BasicBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def spec_text(size: int) -> str:
    L = []
    add = L.append
    add("# torchvision-style ResNet-18 (bench/make_resnet18.py), written the way the PyTorch")
    add("# module reads: integer padding, residual Adds, downsample branches.")
    add("version: 1\nsource: resnet18.h5\nconvention: torch\nmodel:")
    add(f"  inputs: {{x: [{size}, {size}, 3]}}\n  layers:")
    bn = "epsilon: 1.0e-5, momentum: 0.9"
    add("    - {class: Conv2D, name: conv1, filters: 64, kernel_size: 7, strides: 2, "
        "padding: 3, use_bias: false}")
    add(f"    - {{class: BatchNormalization, name: bn1, {bn}}}")
    add("    - {class: ReLU, name: relu}")
    add("    - {class: MaxPooling2D, name: maxpool, pool_size: 3, strides: 2, padding: 1}")
    prev = "maxpool"
    cin = 64
    for li, planes in enumerate((64, 128, 256, 512), start=1):
        for b in range(2):
            stride = 2 if (li > 1 and b == 0) else 1
            p = f"layer{li}.{b}"
            add(f"    - {{class: Conv2D, name: {p}.conv1, filters: {planes}, kernel_size: 3, "
                f"strides: {stride}, padding: 1, use_bias: false, inputs: {prev}}}")
            add(f"    - {{class: BatchNormalization, name: {p}.bn1, {bn}}}")
            add(f"    - {{class: ReLU, name: {p}.relu1}}")
            add(f"    - {{class: Conv2D, name: {p}.conv2, filters: {planes}, kernel_size: 3, "
                f"padding: 1, use_bias: false}}")
            add(f"    - {{class: BatchNormalization, name: {p}.bn2, {bn}}}")
            short = prev
            if stride != 1 or cin != planes:
                add(f"    - {{class: Conv2D, name: {p}.downsample.0, filters: {planes}, "
                    f"kernel_size: 1, strides: {stride}, use_bias: false, inputs: {prev}}}")
                add(f"    - {{class: BatchNormalization, name: {p}.downsample.1, {bn}}}")
                short = f"{p}.downsample.1"
            add(f"    - {{class: Add, name: {p}.add, inputs: [{p}.bn2, {short}]}}")
            add(f"    - {{class: ReLU, name: {p}.relu2}}")
            prev = f"{p}.relu2"
            cin = planes
    add("    - {class: GlobalAveragePooling2D, name: avgpool}")
    add("    - {class: Dense, name: fc, units: 1000}")
    add("verify:\n  inputs: resnet18.io.npz:x\n  expected: [resnet18.io.npz:y0]\n"
        "  input_layout: nchw")
    return "\n".join(L) + "\n"


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(18)
    m = ResNet18()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) * 0.5 + 0.75)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)
        m.train()
        for _ in range(3):
            m(torch.randn((8, 3, 224, 224), generator=gen))
    m.eval()
    x = torch.randn((4, 3, 224, 224), generator=gen)
    with torch.no_grad():
        y = m(x)
    path = os.path.join(out, "resnet18.h5")
    with h5py.File(path, "w") as f:
        for k, v in m.state_dict().items():
            f.create_dataset(k, data=v.detach().numpy())
    np.savez(os.path.join(out, "resnet18.io.npz"), x=x.numpy(), y0=y.numpy())
    with open(os.path.join(out, "resnet18.yaml"), "w") as fh:
        fh.write(spec_text(224))
    # baseline: torch.load of a saved state_dict + building the module + one forward pass
    with tempfile.TemporaryDirectory() as td:
        pt = os.path.join(td, "r18.pt")
        torch.save(m.state_dict(), pt)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            m2 = ResNet18().eval()
            m2.load_state_dict(torch.load(pt, weights_only=True))
            with torch.no_grad():
                m2(x)
            times.append(time.perf_counter() - t)
    json.dump({"torch": torch.__version__, "load_and_forward_s": sorted(times)[1],
               "threads": torch.get_num_threads(), "batch": 4},
              open(os.path.join(out, "torch_timing.json"), "w"), indent=1)
    print(f"wrote {out}: {os.path.getsize(path) / 2**20:.1f} MiB, torch load+forward "
          f"{sorted(times)[1]:.3f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else
         os.path.join(os.path.dirname(os.path.abspath(__file__)), "resnet18"))
