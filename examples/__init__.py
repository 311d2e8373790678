"""A gallery of multi-task architectures that edgecut tailors, each loadable as `examples.<module>:<Class>`.

They live outside the `edgecut` package on purpose: each is a user's model as edgecut sees it (a
`MultiTaskModel` subclass in the user's own module), loaded with `--model examples.unet:DepthwiseUNet`
from the repository root. tests/unit/cut/test_gallery.py prunes every one of them, and `edgecut bench
generality` trains and tailors them for the *Generality* table in docs/benchmarks.md.

| model | shape |
|---|---|
| `edgecut.server.mtl.models:ResNetMTL` | the reference: residual encoder, per-task decoder heads |
| `examples.mobilenet_fpn:MobileNetFPN` | MobileNetV2 inverted residuals (depthwise, residual adds), FPN decoder |
| `examples.unet:DepthwiseUNet` | depthwise-separable U-Net, concatenated skips, a task-specific branch |
| `examples.grouped:GroupedHydra` | ResNeXt-style grouped convs + GroupNorm, many image-level heads |
| `examples.mobilevit:MobileViT` | MobileViT-style: inverted residuals, attention + token MLP on the map's positions |
| `examples.efficient_se:EfficientSE` | MBConv + squeeze-excitation, SiLU / Hardswish, dilated concat decoder |
| `examples.token_heads:TokenHeads` | patch trunk returning tokens; transformer-style heads per task |
"""

GALLERY = {
    "resnet": "edgecut.server.mtl.models:ResNetMTL",
    "mobilenet-fpn": "examples.mobilenet_fpn:MobileNetFPN",
    "unet": "examples.unet:DepthwiseUNet",
    "grouped": "examples.grouped:GroupedHydra",
    "mobilevit": "examples.mobilevit:MobileViT",
    "efficient-se": "examples.efficient_se:EfficientSE",
    "token-heads": "examples.token_heads:TokenHeads",
}
