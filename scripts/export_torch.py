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
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch", help="torchvision / timm model name, e.g. resnet50, vgg16_bn, googlenet, efficientnet_lite0")
    ap.add_argument("-o", "--out", required=True, help="output .safetensors path")
    ap.add_argument("--weights", default=None, help="torchvision weights enum name (e.g. DEFAULT, IMAGENET1K_V1); none = random")
    ap.add_argument("--timm", action="store_true", help="build the model with timm instead of torchvision")
    ap.add_argument("--pretrained", action="store_true", help="timm: load pretrained weights")
    args = ap.parse_args()

    import torch
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
