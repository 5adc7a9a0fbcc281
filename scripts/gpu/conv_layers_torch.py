"""PyTorch / cuDNN's time for the convolutions that `examples/conv_layers.rs` times: resnet50's
layer shapes, forward and backward-data, fp32 (TF32 off), tf32 and bf16, NCHW and channels-last,
cudnn.benchmark on (the fastest algorithm cuDNN finds, as a tuned PyTorch program runs).

    python3 conv_layers_torch.py [--batch 64] [--reps 20] [--json FILE]

One JSON line per (layer, precision, layout, pass), the fields of conv_layers.rs's lines with
"engine": "torch" and "layout"; timed with CUDA events around REPS calls after two warm-ups.
"""
import argparse
import json

import torch
import torch.nn.functional as F

# (cin, cout, k, stride, hw_in, count in resnet50): the table of examples/conv_layers.rs
RESNET50 = [
    (3, 64, 7, 2, 224, 1), (64, 64, 1, 1, 56, 1), (64, 64, 3, 1, 56, 3), (64, 256, 1, 1, 56, 4),
    (256, 64, 1, 1, 56, 2), (256, 128, 1, 1, 56, 1), (128, 128, 3, 2, 56, 1), (128, 512, 1, 1, 28, 4),
    (256, 512, 1, 2, 56, 1), (512, 128, 1, 1, 28, 3), (128, 128, 3, 1, 28, 3), (512, 256, 1, 1, 28, 1),
    (256, 256, 3, 2, 28, 1), (256, 1024, 1, 1, 14, 6), (512, 1024, 1, 2, 28, 1), (1024, 256, 1, 1, 14, 5),
    (256, 256, 3, 1, 14, 5), (1024, 512, 1, 1, 14, 1), (512, 512, 3, 2, 14, 1), (512, 2048, 1, 1, 7, 3),
    (1024, 2048, 1, 2, 14, 1), (2048, 512, 1, 1, 7, 2), (512, 512, 3, 1, 7, 2),
]


def timed(fn, reps):
    fn()
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    dev = "cuda"
    lines = []
    print(f"{'layer':<28}{'prec':>6}{'layout':>8}{'pass':>10}{'ms/call':>11}{'TFLOP/s':>10}")
    for i, (ci, co, k, s, hw, count) in enumerate(RESNET50):
        p = k // 2
        oh = (hw + 2 * p - k) // s + 1
        flop = 2.0 * a.batch * co * oh * oh * ci * k * k
        name = f"{ci}->{co} k{k} s{s} {hw}x{hw}"
        g = torch.Generator(device=dev).manual_seed(i)
        x0 = torch.rand(a.batch, ci, hw, hw, device=dev, generator=g) * 2 - 1
        w0 = (torch.rand(co, ci, k, k, device=dev, generator=g) - 0.5) * 0.1
        b0 = (torch.rand(co, device=dev, generator=g) - 0.5) * 0.1
        gy0 = torch.rand(a.batch, co, oh, oh, device=dev, generator=g) - 0.5
        for prec in ["fp32", "tf32", "bf16"]:
            torch.backends.cudnn.allow_tf32 = prec == "tf32"
            dt = torch.bfloat16 if prec == "bf16" else torch.float32
            for layout in ["nchw", "cl"]:
                mf = torch.channels_last if layout == "cl" else torch.contiguous_format
                x, w, b, gy = (t.to(dt).contiguous(memory_format=mf) if t.dim() == 4 else t.to(dt) for t in (x0, w0, b0, gy0))
                for pas in ["fwd", "bwd_data"]:
                    if pas == "fwd":
                        fn = lambda: F.conv2d(x, w, b, stride=s, padding=p)
                    else:
                        fn = lambda: torch.ops.aten.convolution_backward(
                            gy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, [True, False, False])
                    ms = timed(fn, a.reps)
                    tf = flop / ms / 1e9
                    print(f"{name:<28}{prec:>6}{layout:>8}{pas:>10}{ms:>11.3f}{tf:>10.1f}", flush=True)
                    lines.append(dict(kind="conv", engine="torch", layer=name, index=i, count=count, precision=prec,
                                      layout=layout, pas=pas, batch=a.batch, ms=ms, tflops=tf))
    for l in lines:
        l["pass"] = l.pop("pas")
    if a.json:
        with open(a.json, "w") as f:
            for l in lines:
                f.write(json.dumps(l) + "\n")


if __name__ == "__main__":
    main()
