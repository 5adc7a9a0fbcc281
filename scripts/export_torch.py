#!/usr/bin/env python3
"""Export a torchvision or timm model to deepviz's model format: one .safetensors file with the
state dict under PyTorch's own tensor names and the architecture in `__metadata__`.

    python3 scripts/export_torch.py resnet50 --weights DEFAULT -o resnet50.safetensors
    python3 scripts/export_torch.py efficientnet_lite0 --timm --pretrained -o lite0.safetensors
    python3 scripts/export_torch.py vgg16 -o vgg16_random.safetensors        # random weights

Needs torch + torchvision (and timm for --timm) and safetensors. deepviz itself needs none of
them. The metadata written: arch, input_size, mean, std (the model's preprocessing) and, for
GoogLeNet, transform_input.
"""
import argparse
import pathlib
import re
import sys

# What deepviz can load, read from the one table of it (src/zoo/mod.rs, `ARCHS`), and which of
# those each library builds under the same tensor names deepviz expects. timm's VGG, MobileNetV2
# and SqueezeNet differ in structure or naming from torchvision's, so they come from torchvision.
ZOO = pathlib.Path(__file__).resolve().parent.parent / "src" / "zoo" / "mod.rs"
TIMM_ONLY = {"efficientnet_lite0", "tf_efficientnet_lite0"}
TIMM_TOO = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}


def known_archs():
    text = ZOO.read_text()
    table = re.search(r"pub const ARCHS: &\[&str\] = &\[(.*?)\];", text, re.S)
    return re.findall(r'"([a-z0-9_]+)"', table.group(1))


def check_arch(arch, use_timm):
    """Refuse, before importing torch, an architecture deepviz cannot load from this library."""
    archs = known_archs()
    if use_timm:
        ok = [a for a in archs if a in TIMM_ONLY | TIMM_TOO]
        lib = "timm"
    else:
        ok = [a for a in archs if a not in TIMM_ONLY]
        lib = "torchvision"
    if arch in ok:
        return
    hint = ""
    if arch in archs:
        hint = f" (it exports {'without' if use_timm else 'with'} --timm)"
    sys.exit(f"error: deepviz cannot load {lib}'s `{arch}`{hint}; it loads from {lib}: {', '.join(ok)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch", help="torchvision / timm model name, e.g. resnet50, vgg16_bn, googlenet, efficientnet_lite0")
    ap.add_argument("-o", "--out", required=True, help="output .safetensors path")
    ap.add_argument("--weights", default=None, help="torchvision weights enum name (e.g. DEFAULT, IMAGENET1K_V1); `none` or absent: random weights")
    ap.add_argument("--timm", action="store_true", help="build the model with timm instead of torchvision")
    ap.add_argument("--pretrained", action="store_true", help="timm: load pretrained weights")
    args = ap.parse_args()
    if args.weights is not None and args.weights.lower() == "none":
        args.weights = None
    if args.timm and args.weights:
        sys.exit("error: --weights names torchvision weights; with --timm use --pretrained")
    check_arch(args.arch, args.timm)

    import torch  # noqa: F401  (safetensors.torch needs it)
    from safetensors.torch import save_file

    mean, std, size = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224
    if args.timm:
        import timm
        model = timm.create_model(args.arch, pretrained=args.pretrained)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        mean, std = cfg.get("mean", mean), cfg.get("std", std)
        size = cfg.get("input_size", (3, size, size))[-1]
    else:
        import torchvision
        kwargs = {"weights": args.weights} if args.weights else {"weights": None}
        if args.arch == "googlenet" and not args.weights:
            kwargs["init_weights"] = True
        model = torchvision.models.get_model(args.arch, **kwargs)
    model.eval()

    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {
        "arch": args.arch,
        "input_size": str(size),
        "mean": ",".join(f"{m:.6f}" for m in mean),
        "std": ",".join(f"{s:.6f}" for s in std),
        "exported_by": "deepviz scripts/export_torch.py",
    }
    if getattr(model, "transform_input", False):
        meta["transform_input"] = "true"
    save_file(sd, args.out, metadata=meta)
    print(f"wrote {args.out}: {len(sd)} tensors, arch {args.arch}", file=sys.stderr)


if __name__ == "__main__":
    main()
