"""Throughput of each chapter's full models at full resolution on this machine, and the wall time of each
chapter's ``full`` run extrapolated from the dataset sizes.

    python benchmarks/bench_full.py [--device auto|cpu|cuda] [--batch 8] [--steps 3] [--only univfd ucf]
                                    [--markdown] [--json out.json]

For every (model, input side) a chapter's ``full`` parameters name, it times, with random weights (the timing
does not depend on them):

- ``extract``: images/s of a forward pass under ``no_grad`` (feature extraction, scoring);
- ``train``: optimiser steps/s (forward, backward, AdamW step) of batches of ``--batch`` images, and the
  images/s that makes.

Then it multiplies out the work each chapter's full run does (:data:`WORKLOADS`: images x passes, from the
published dataset sizes in ``../shared/reference/published_layouts.md`` / data/README.md and the full parameters;
each row says where its count comes from) into hours on this device. On the GPU it uses the same settings as
the ``full`` profile: bf16 autocast where supported (else fp16) and ``cudnn.benchmark``; on the CPU, fp32.
Data loading is not timed (the chapters overlap it with DataLoader workers): the hours are a lower bound for a
machine whose disks and CPUs keep the GPU fed.

Needs only torch, timm, open_clip and dfbook's model code (``dfbook.methods.ucf``, ``dfbook.methods.benchmark``),
so it runs on a GPU machine without a package registry; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn


def _timm(arch: str, **kw):
    import timm

    return lambda: timm.create_model(arch, pretrained=False, **kw)


def _openclip_visual(arch: str):
    def make():
        import open_clip

        return open_clip.create_model(arch, pretrained=None).visual
    return make


def _ucf():
    from dfbook.methods import ucf

    return ucf.build_full()


def _small_cnn():
    from dfbook.methods import benchmark

    return benchmark.SmallCNN()


# (key, builder, input side): every model of the full parameters (notebooks/params/*.full.yaml)
MODELS = {
    "SmallCNN@128": (_small_cnn, 128),
    "CLIP ViT-B/32@224": (_openclip_visual("ViT-B-32"), 224),
    "CLIP ViT-L/14@224": (_openclip_visual("ViT-L-14"), 224),
    "ResNet-50@224": (_timm("resnet50", num_classes=1), 224),
    "ResNet-18@224": (_timm("resnet18", num_classes=13), 224),
    "ResNet-34@224": (_timm("resnet34", num_classes=13), 224),
    "ConvNeXtV2-T@512": (_timm("convnextv2_tiny", num_classes=2), 512),
    "EffNet-B4@512": (_timm("tf_efficientnet_b4", num_classes=2), 512),
    "EffNet-B5@512": (_timm("tf_efficientnet_b5", num_classes=2), 512),
    "EffNet-B6@512": (_timm("tf_efficientnet_b6", num_classes=2), 512),
    "UCF 2xXception@256": (_ucf, 256),
    "Xception@299": (_timm("legacy_xception", num_classes=2), 299),
    "ConvNeXt-B@299": (_timm("convnext_base", num_classes=2), 299),
}


@dataclass(frozen=True)
class Work:
    chapter: str
    model: str        # key of MODELS
    kind: str         # extract | train
    images: int       # images per pass
    passes: int       # epochs, views, runs
    source: str       # where the count comes from


# Sizes: CNNDetection ProGAN train 362k fakes + 362k reals (720k), val 4k, CNN_synth_testset ~ 70k images (its 13
# sets); UnivFD diffusion release 1k per folder x 10 = 10k; FF++ 1000 real + 4000 fake videos, 32 frames each =
# 160k frames (train 72 %: 115k); FF++ at 1 fps ~ 18 frames a video = 90k; Celeb-DF-v2 6529 videos x 32 = 209k;
# WildDeepfake ~ 1.2M face frames (7314 sequences); AI-Face is not read as images.
WORKLOADS = [
    Work("benchmark", "SmallCNN@128", "train", 115_000, 10 * 4, "FF++ c23 train frames x EPOCHS 10 x 4 methods (fakes+reals, balanced)"),
    Work("benchmark", "SmallCNN@128", "train", 720_000, 4, "CNNDetection ProGAN train x IMAGE_EPOCHS 4"),
    Work("benchmark", "SmallCNN@128", "extract", 160_000 + 70_000, 4 + 1, "FF++ test frames + CNNDetection test, per trained model"),
    Work("clip_peft", "CLIP ViT-B/32@224", "extract", 90_000, 1, "FF++ c40 at 1 fps (embeddings cached once)"),
    Work("clip_peft", "CLIP ViT-B/32@224", "train", 2 * 100 * 18, 15, "LoRA: PACKAGE_VIDEOS 100 per class x 18 frames x LORA_EPOCHS 15"),
    Work("defenders", "ConvNeXtV2-T@512", "train", 45_000, 10 * 3, "MAX_PER_METHOD 5000 x ~9 methods x EPOCHS 10, 3 of 7 experts"),
    Work("defenders", "EffNet-B4@512", "train", 45_000, 10 * 2, "the same, 2 B4 experts"),
    Work("defenders", "EffNet-B5@512", "train", 45_000, 10 * 2, "the same, 2 B5 experts"),
    Work("defenders", "EffNet-B6@512", "train", 45_000, 10, "the same, 1 B6 expert"),
    Work("defenders", "CLIP ViT-B/32@224", "extract", 45_000 + 80_000, 1, "cluster encoder: training images + test frames"),
    Work("hierarchical", "ResNet-18@224", "train", 56_000, 20 * 5, "~80k generator images, 70 % train, EPOCHS 20 x 5 networks"),
    Work("hierarchical", "ResNet-34@224", "train", 56_000, 20 * 5, "the same with ResNet-34"),
    Work("hierarchical", "ResNet-50@224", "train", 56_000, 20 * 3, "seed variant: 3 levels"),
    Work("ucf", "UCF 2xXception@256", "train", 720 * 5 * 32, 6, "FF++ c23 train videos x TRAIN_FRAMES 32 x EPOCHS 6"),
    Work("ucf", "UCF 2xXception@256", "train", 720 * 5 * 8, 2 * 4, "grid: GRID_FRAMES 8 x GRID_EPOCHS 2 x 4 settings"),
    Work("ucf", "UCF 2xXception@256", "extract", 160_000 + 209_000 + 1_200_000, 1, "test: FF++, Celeb-DF-v2, WildDeepfake frames"),
    Work("univfd", "CLIP ViT-L/14@224", "extract", 720_000, 2 + 1, "ProGAN train x (AUG_VIEWS 2 + clean)"),
    Work("univfd", "CLIP ViT-L/14@224", "extract", 4_000 + 70_000 + 10_000, 1 + 10, "val + tests, clean + 10 perturbation levels"),
    Work("univfd", "ResNet-50@224", "train", 720_000, 100, "CNNDetection baseline, CNN_EPOCHS 100 (an upper bound: early stopping ends sooner)"),
    Work("unsupervised_video", "Xception@299", "train", 5_000 * 32 * 0.8, 300, "pseudo-labelled FF++ frames (VAF_FRAMES 32, KEEP 0.8) x BASELINE_EPOCHS 300"),
    Work("unsupervised_video", "ConvNeXt-B@299", "train", 5_000 * 32 * 0.8, 20, "the fork: FORK_EPOCHS 20"),
    Work("unsupervised_video", "Xception@299", "extract", 5_000 * 32 + 209_000, 300 // 100 + 1, "re-selection every 100 epochs + tests"),
    # leaderboard: every saved detector scores the full test matrix (FF++ test 32k + Celeb-DF-v2 209k + WildDeepfake
    # test ~120k + UADFV ~15k frames + CNNDetection test 70k + UnivFD 10k ~ 456k images) clean and under 3 perturbations;
    # the defenders mixture's seven experts are counted by backbone
    *[Work("leaderboard", model, "extract", 456_000, 4 * n, f"test matrix x (clean + JPEG, blur, resize){note}")
      for model, n, note in (("UCF 2xXception@256", 1, ", UCF"), ("CLIP ViT-L/14@224", 1, ", UnivFD probe and NN (shared features)"),
                             ("CLIP ViT-B/32@224", 1, ", CLIP-PEFT adapter"), ("ResNet-18@224", 1, ", hierarchical level 1"),
                             ("ConvNeXt-B@299", 1, ", unsupervised fork"), ("ConvNeXtV2-T@512", 3, ", 3 defenders experts"),
                             ("EffNet-B4@512", 2, ", 2 defenders experts"), ("EffNet-B5@512", 2, ", 2 defenders experts"),
                             ("EffNet-B6@512", 1, ", 1 defenders expert"))],
]


def _loss(out) -> torch.Tensor:
    """A scalar from whatever the model returns (tensor, tuple, dict): the timing needs a backward pass only."""
    if isinstance(out, torch.Tensor):
        return out.float().mean()
    values = out.values() if isinstance(out, dict) else out
    return sum(_loss(v) for v in values if isinstance(v, (torch.Tensor, tuple, list, dict)))


def measure(name: str, device: torch.device, batch: int, steps: int) -> dict:
    make, size = MODELS[name]
    model = make().to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    cuda = device.type == "cuda"
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    amp = torch.autocast("cuda", dtype=dtype) if cuda else torch.autocast("cpu", enabled=False)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    model.eval()
    with torch.no_grad(), amp:
        model(x)  # warm-up (cudnn autotuning, lazy init)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            model(x)
        sync()
        extract = batch * steps / (time.perf_counter() - t0)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and dtype == torch.float16)
    for i in range(steps + 1):  # the first step warms up
        if i == 1:
            sync()
            t0 = time.perf_counter()
        with amp:
            loss = _loss(model(x))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    sync()
    step_s = steps / (time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    del model, opt
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return {"model": name, "side": size, "batch": batch, "extract_img_s": extract, "train_steps_s": step_s,
            "train_img_s": step_s * batch, "peak_gpu_GiB": peak}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def run(device: str = "auto", batch: int = 8, steps: int = 3, only: list[str] | None = None) -> dict:
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the full profile
    works = [w for w in WORKLOADS if not only or w.chapter in only]
    speeds = {}
    for m in dict.fromkeys(w.model for w in works):
        speeds[m] = measure(m, dev, batch, steps)
        print(json.dumps(speeds[m]), file=sys.stderr, flush=True)  # progress: each model as it is measured
    rows = []
    for w in works:
        s = speeds[w.model]
        rate = s["extract_img_s"] if w.kind == "extract" else s["train_img_s"]
        rows.append({"chapter": w.chapter, "model": w.model, "kind": w.kind, "images": int(w.images * w.passes),
                     "img_s": rate, "hours": w.images * w.passes / rate / 3600, "source": w.source})
    per_chapter = {}
    for r in rows:
        per_chapter[r["chapter"]] = per_chapter.get(r["chapter"], 0.0) + r["hours"]
    return {"device": device_name(dev), "torch": torch.__version__, "batch": batch, "steps": steps,
            "speeds": list(speeds.values()), "work": rows, "hours_per_chapter": per_chapter}


def markdown(res: dict) -> str:
    lines = [f"Measured on {res['device']} (torch {res['torch']}, batch {res['batch']}, random weights, "
             f"{'bf16/fp16 autocast' if 'CPU' not in res['device'] else 'fp32'}).", "",
             "| model | side | extract img/s | train steps/s | train img/s |", "|---|---|---|---|---|"]
    lines += [f"| {s['model']} | {s['side']} | {s['extract_img_s']:.2f} | {s['train_steps_s']:.3f} | "
              f"{s['train_img_s']:.2f} |" for s in res["speeds"]]
    lines += ["", "| chapter | full run, extrapolated hours on this device |", "|---|---|"]
    lines += [f"| {c} | {h:,.0f} |" for c, h in res["hours_per_chapter"].items()]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="chapters to measure (default: all)")
    ap.add_argument("--markdown", action="store_true", help="print the README tables")
    ap.add_argument("--json", help="write the full result here")
    args = ap.parse_args(argv)
    res = run(args.device, args.batch, args.steps, args.only)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    print(markdown(res) if args.markdown else json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
