"""Fifteen toy image generators, each with the fingerprint mechanism of its real counterpart.

A toy generator does not learn anything: it re-synthesises a clean content render ``x`` through
the *architecture* of its namesake with fixed random weights drawn from its own seed (the name's
CRC32 and ``generator_seed``), so its fingerprint is the same in every corpus. Generators of one
family share the mechanism (e.g. every GAN upsamples a coarse image with small conv kernels, every
latent diffusion model decodes f=8 latents) and differ in the weights and details -- the premise of
attribution and cross-generator generalisation (Wang et al. CVPR 2020; Ojha et al. CVPR 2023).

How a fingerprint arises. Each upsampling path ``decode`` is run twice: with its balanced base
kernels (an ideal interpolator) and with the generator's perturbed kernels. The fake is
``x + decode_g(lo) - decode_base(lo) - (1 - keep) * detail``, i.e. the content plus exactly the
trace the architecture leaves (checkerboards of transposed convolutions, 2x2 blocks of nearest
upsampling, period-8 grids of f=8 VAE decoders, ...) minus the detail it fails to reproduce.
Images are float tensors ``(N, 3, S, S)`` in [0, 1]; ``S`` must be divisible by 16.

| name | family | content | mechanism |
|---|---|---|---|
| progan | gan | scenes | 2 transposed-conv (3x3, stride 2) stages: checkerboard at Nyquist |
| stylegan | gan | scenes | 3 nearest-upsample + conv stages, colour-correlated noise injection, AdaIN "droplet" blob |
| stylegan2 | gan | scenes | 3 bilinear-upsample + conv stages (weak trace), weaker noise injection |
| biggan | gan | scenes | class-conditional: conv weights and channel gains depend on the content class |
| cyclegan | gan | real scenes | image-to-image: a *real* photo, ground re-coloured (season), encoder-decoder with 3x3 transposed convs |
| stargan | gan | real faces | attribute editing (hair colour) of a real face through a 4x4 transposed-conv bottleneck, blurry |
| attgan | gan | real faces | attribute editing (band edits: bangs / glasses) through a U-Net with skip connections |
| gaugan | gan | scenes | semantic-map synthesis: flat region colours + SPADE texture modulated per region |
| whichfaceisreal | gan | faces | StyleGAN2-like synthesis at 2x resolution, then downscaled (trace attenuated) |
| adm | diffusion | scenes | pixel-space denoising: detail slightly smoothed, correlated coloured residue |
| glide | diffusion | scenes | pixel diffusion at S/4 + one x4 upsampler diffusion (band gap, two residues) |
| dalle2 | diffusion | scenes | pixel diffusion at S/4 + two x2 upsamplers (unCLIP decoder) |
| ldm | diffusion | scenes | KL-f8 VAE decoder of a 4-channel latent (3 nearest + conv stages), residue |
| stable_diffusion | diffusion | scenes | another KL-f8 VAE decoder (different weights, stronger trace) |
| dalle | autoregressive | scenes | VQ tokens: 4x4 patches quantised to a codebook, decoded with a conv |
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dfbook import runtime
from dfbook.bench import scenes


@dataclass(frozen=True)
class Generator:
    """A toy generator: ``source`` is what it starts from -- ``scene`` (a new clean render),
    ``face`` (a new clean face render), ``real_scene`` / ``real_face`` (an existing real photo of
    the corpus, image-to-image) -- and ``run(x, ctx, w)`` maps ``(N,3,S,S)`` to ``(N,3,S,S)``."""

    name: str
    family: str
    source: str
    mechanism: str
    run: Callable


class Weights:
    """Fixed random weights of one generator, drawn in creation order from its own seed.

    Kernel perturbations mix a part shared by the whole family (``share`` of the variance, drawn
    from the family's seed for the i-th kernel) with the generator's own part, so generators of
    one family leave related traces -- what lets a detector transfer within a family."""

    def __init__(self, name: str, seed: int, family: str = "", share: float = 0.5):
        self.rng = np.random.default_rng([zlib.crc32(name.encode()), seed])
        self.family, self.seed, self.share, self.calls = family, seed, share, 0

    def normal(self, *shape) -> torch.Tensor:
        return torch.from_numpy(self.rng.standard_normal(shape).astype(np.float32))

    def mix(self, eps: float, cin: int = 3, cout: int = 3) -> torch.Tensor:
        """A ``(cout, cin)`` channel mix: identity-like (cout == cin) plus ``eps`` noise."""
        return torch.eye(cout, cin) + eps * self.normal(cout, cin)

    def conv(self, k: int, eps: float, transposed: bool = False, c: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        """``(base, perturbed)`` kernels. The base is the balanced binomial interpolator (every
        stride-2 phase sums to 1 when ``transposed``), so base - perturbed is the pure trace."""
        taps = {3: [1, 2, 1], 4: [1, 3, 3, 1]}[k]
        b1 = torch.tensor(taps, dtype=torch.float32)
        b1 = b1 / b1.sum() * (2.0 if transposed else 1.0)
        b = torch.outer(b1, b1)
        base = torch.eye(c)[:, :, None, None] * b
        fam = np.random.default_rng([zlib.crc32(self.family.encode()), self.seed, self.calls, k, c])
        self.calls += 1
        d = np.sqrt(self.share) * torch.from_numpy(fam.standard_normal((c, c, k, k)).astype(np.float32)) \
            + np.sqrt(1 - self.share) * self.normal(c, c, k, k)
        # zero-sum perturbation: the trace changes texture, never the mean colour (a global statistic)
        d = d * (1 + torch.eye(c)[:, :, None, None])
        d = d - d.mean((2, 3), keepdim=True)
        return base, base + eps * b.mean() * d


# -- building blocks -------------------------------------------------------------------------

def down(x: torch.Tensor, f: int) -> torch.Tensor:
    return F.avg_pool2d(x, f) if f > 1 else x


def _conv(x, k):
    p = k.shape[-1] // 2
    return F.conv2d(F.pad(x, (p, p - (k.shape[-1] + 1) % 2, p, p - (k.shape[-1] + 1) % 2), mode="replicate"), k)


def up2(x: torch.Tensor, mode: str, k: torch.Tensor) -> torch.Tensor:
    """One x2 upsampling stage: ``tconv`` (transposed conv, stride 2), ``nearest`` or
    ``bilinear`` interpolation followed by a conv with kernel ``k`` (cout, cin, kh, kw)."""
    if mode == "tconv":
        y = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.transpose(0, 1), stride=2)
        # input j lands at output 2j+3 for the 3- and 4-tap kernels: crop the padding margin back to 2x
        return y[..., 3:3 + 2 * x.shape[-2], 3:3 + 2 * x.shape[-1]]
    y = F.interpolate(x, scale_factor=2, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
    return _conv(y, k)


def decode(lo: torch.Tensor, stages, noise=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``stages`` [(mode, base_k, pert_k, noise_weights or None)] twice, returning
    ``(ideal, generated)``; ``noise(shape)`` draws injected noise for the generated path."""
    ideal, gen = lo, lo
    for mode, kb, kp, nw in stages:
        ideal, gen = up2(ideal, mode, kb), up2(gen, mode, kp)
        if nw is not None:
            n, _, h, w = gen.shape
            gen = gen + nw.view(1, -1, 1, 1) * noise((n, 1, h, w))  # one map, per-channel weights
    return ideal, gen


def resynth(x, f, stages, ctx, keep: float):
    """The content plus the trace of an upsampling path from ``x`` downsampled by ``f``."""
    ideal, gen = decode(down(x, f), stages, ctx["noise"])
    return x + (gen - ideal) - (1.0 - keep) * (x - ideal)


def residue(shape, ctx, w_kernel: torch.Tensor, mix: torch.Tensor, sigma: float):
    """Leftover denoising noise: white noise through a fixed 3x3 kernel and colour mix, ``sigma`` in [0,1] units."""
    n = ctx["noise"](shape)
    r = _conv(n, w_kernel)
    r = torch.einsum("oc,nchw->nohw", mix, r)
    return sigma * r / r.std().clamp_min(1e-6)


def colour(x, m):
    return torch.einsum("oc,nchw->nohw", m, x)


def stages_of(w: Weights, modes, k: int, eps: float, noise: float | None = None, c: int = 3):
    out = []
    for mode in modes:
        kb, kp = w.conv(k, eps, transposed=(mode == "tconv"), c=c)
        nw = None if noise is None else noise * (0.5 + w.rng.random(3).astype(np.float32))
        out.append((mode, kb, kp, None if nw is None else torch.from_numpy(nw)))
    return out


# -- the generators --------------------------------------------------------------------------

def _progan(x, ctx, w):
    st = stages_of(w, ["tconv", "tconv"], 3, 0.045)
    return colour(resynth(x, 4, st, ctx, keep=0.9), w.mix(0.02))


def _stylegan(x, ctx, w):
    st = stages_of(w, ["nearest"] * 3, 3, 0.06, noise=1.5 / 255)
    y = resynth(x, 8, st, ctx, keep=0.85)
    # AdaIN "water droplet" (Karras et al. 2020, sec. 2): a blob at a random place, fixed colour
    n, _, s, _ = y.shape
    c = torch.from_numpy(ctx["rng"].uniform(0.15, 0.85, size=(n, 2, 1, 1)).astype(np.float32))
    ax = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    d2 = (ax.view(1, 1, -1, 1) - c[:, :1]) ** 2 + (ax.view(1, 1, 1, -1) - c[:, 1:]) ** 2
    tint = w.normal(3).view(1, 3, 1, 1) * 0.05
    return colour(y, w.mix(0.02)) + tint * torch.exp(-d2 / (2 * (1.5 / 32) ** 2))


def _stylegan2(x, ctx, w):
    st = stages_of(w, ["bilinear"] * 3, 3, 0.05, noise=1.0 / 255)
    return colour(resynth(x, 8, st, ctx, keep=0.95), w.mix(0.01))


def _biggan(x, ctx, w):
    # class-conditional batch norm and class embeddings: weights depend on the content class
    n_cls = len(scenes.CLASSES)
    base_st = stages_of(w, ["nearest", "nearest"], 3, 0.04)
    per_cls = [stages_of(w, ["nearest", "nearest"], 3, 0.04) for _ in range(n_cls)]
    gains = 1.0 + 0.03 * w.normal(n_cls, 3)
    y = torch.empty_like(x)
    cls = ctx["content_idx"]
    for c in np.unique(cls):
        i = torch.from_numpy(np.flatnonzero(cls == c))
        st = [(m, kb, kp + kc - kb2, None) for (m, kb, kp, _), (_, kb2, kc, _) in zip(base_st, per_cls[c])]
        y[i] = resynth(x[i], 4, st, ctx, keep=0.88) * gains[c].view(1, 3, 1, 1)
    return y


def _cyclegan(x, ctx, w):
    # image-to-image translation of a real photo (summer <-> winter): the ground changes season
    seg = torch.from_numpy(ctx["seg"] == 1).unsqueeze(1).float()
    grounds = torch.tensor(list(scenes.GROUNDS.values()), dtype=torch.float32)
    target = grounds[torch.from_numpy(ctx["rng"].integers(0, 3, len(x)))].view(-1, 3, 1, 1)
    mean_g = (x * seg).sum((2, 3), keepdim=True) / seg.sum((2, 3), keepdim=True).clamp_min(1)
    x = x + 0.6 * seg * (target - mean_g)
    st = stages_of(w, ["tconv", "tconv"], 3, 0.035)
    return colour(resynth(x, 4, st, ctx, keep=0.6), w.mix(0.03))


def _band_edit(x, ctx, cy, sy):
    """An attribute edit: a random colour shift in a horizontal band centred at height ``cy``."""
    n, _, s, _ = x.shape
    ax = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    band = torch.exp(-((ax.view(1, 1, -1, 1) - cy) ** 2) / (2 * sy ** 2)).expand(n, 1, s, s)
    shift = torch.from_numpy(ctx["rng"].normal(0, 0.12, size=(n, 3, 1, 1)).astype(np.float32))
    return x + band * shift


def _stargan(x, ctx, w):
    # one network for many attributes; the whole face passes through the bottleneck
    x = _band_edit(x, ctx, cy=0.22, sy=0.12)
    st = stages_of(w, ["tconv", "tconv"], 4, 0.035)
    return colour(resynth(x, 4, st, ctx, keep=0.5), w.mix(0.03))


def _attgan(x, ctx, w):
    # skip connections keep most detail; the edits are local bands (bangs at 0.3, glasses at 0.45)
    cy = torch.from_numpy(np.where(ctx["rng"].random(len(x)) < 0.5, 0.3, 0.45).astype(np.float32)).view(-1, 1, 1, 1)
    x = _band_edit(x, ctx, cy=cy, sy=0.04)
    st = stages_of(w, ["tconv", "tconv"], 4, 0.03)
    return colour(resynth(x, 4, st, ctx, keep=0.8), w.mix(0.02))


def _gaugan(x, ctx, w):
    # SPADE: the layout comes from the semantic map, texture from the generator (Park et al. 2019)
    seg = torch.from_numpy(ctx["seg"].astype(np.int64))
    n, _, s, _ = x.shape
    onehot = F.one_hot(seg, 32).permute(0, 3, 1, 2).float()            # (N,32,S,S)
    area = onehot.sum((2, 3)).clamp_min(1)
    mean = torch.einsum("nkhw,nchw->nkc", onehot, x) / area[..., None]   # region colours
    flat = torch.einsum("nkhw,nkc->nchw", onehot, mean)
    shading = F.interpolate(down(x - flat, 8), scale_factor=8, mode="bilinear", align_corners=False)
    st = stages_of(w, ["nearest"] * 3, 3, 0.3, c=1)
    _, tex = decode(ctx["noise"]((n, 1, s // 8, s // 8)), st)           # luminance texture
    gamma = 0.03 * (1 + w.normal(32).abs())                              # per-label texture strength
    mod = torch.einsum("nkhw,k->nhw", onehot, gamma).unsqueeze(1)
    return colour((flat + shading) * (1 + mod * tex / tex.std().clamp_min(1e-6)), w.mix(0.02))


def _whichfaceisreal(x, ctx, w):
    big = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    st = stages_of(w, ["bilinear"] * 3, 3, 0.08, noise=2.0 / 255)
    y = resynth(big, 8, st, ctx, keep=0.95)
    return colour(down(y, 2), w.mix(0.01))


def _dm_residue(y, ctx, w, sigma):
    kb, kp = w.conv(3, 0.5)
    return y + residue(y.shape, ctx, kp, w.mix(0.4), sigma)


def _adm(x, ctx, w):
    # pixel-space denoiser: fine detail slightly smoothed, a coloured residue left over
    kb, kp = w.conv(3, 0.1)
    y = x - 0.35 * (x - _conv(x, kp))
    return _dm_residue(y, ctx, w, 3.0 / 255)


def _cascade(x, ctx, w, factors, keep):
    """Pixel diffusion at low resolution then diffusion upsamplers (GLIDE, DALL-E 2 / unCLIP)."""
    f = int(np.prod(factors))
    kb, kp = w.conv(3, 0.5)
    y = down(x, f)
    y = y + residue(y.shape, ctx, kp, w.mix(0.4), 2.0 / 255)
    for g in factors:
        target = down(x, f // g)
        up = F.interpolate(y, scale_factor=g, mode="bicubic", align_corners=False)
        ref = F.interpolate(down(target, g), scale_factor=g, mode="bicubic", align_corners=False)
        kb, kp = w.conv(3, 0.5)
        y = up + keep * (target - ref) + residue(up.shape, ctx, kp, w.mix(0.4), 1.2 / 255)
        f //= g
    return colour(y, w.mix(0.01))


def _glide(x, ctx, w):
    return _cascade(x, ctx, w, [4], keep=0.8)


def _dalle2(x, ctx, w):
    return _cascade(x, ctx, w, [2, 2], keep=0.85)


def _vae_f8(x, ctx, w, eps, keep, sigma):
    """A KL-f8 autoencoder: 4-channel latent at S/8, decoder of 3 nearest-upsample + conv stages."""
    enc = w.mix(0.3, cin=3, cout=4)
    proj = torch.linalg.pinv(enc)                  # the ideal decoder's colour map (4 -> 3)
    dec = proj + 0.01 * w.normal(3, 4)             # the learned one, slightly off
    lo = torch.einsum("oc,nchw->nohw", enc, down(x, 8))
    st = [(m, kb, kp, nw) for m, kb, kp, nw in
          ((mode, *w.conv(3, eps, c=4), None) for mode in ["nearest"] * 3)]
    ideal, gen = decode(lo, st)
    ideal, gen = colour(ideal, proj), colour(gen, dec)
    y = x + (gen - ideal) - (1 - keep) * (x - ideal)
    return _dm_residue(y, ctx, w, sigma)


def _ldm(x, ctx, w):
    return _vae_f8(x, ctx, w, eps=0.06, keep=0.9, sigma=1.0 / 255)


def _stable_diffusion(x, ctx, w):
    return _vae_f8(x, ctx, w, eps=0.09, keep=0.85, sigma=1.2 / 255)


def _dalle(x, ctx, w, patch: int = 4, codes: int = 256):
    # VQGAN tokens (DALL-E mini): each patch -> mean colour + contrast x nearest codebook shape
    n, c, s, _ = x.shape
    p = F.unfold(x, patch, stride=patch)                        # (N, 3*p*p, L)
    mean = p.view(n, c, patch * patch, -1).mean(2, keepdim=True)
    r = (p.view(n, c, patch * patch, -1) - mean).view(n, c * patch * patch, -1)
    book = w.normal(codes, c * patch * patch)
    book = book.view(codes, c, patch, patch)
    book = F.avg_pool2d(F.pad(book, (1, 1, 1, 1), mode="circular"), 3, 1)  # smooth, image-like shapes
    book = book.reshape(codes, -1)
    book = book - book.mean(1, keepdim=True)
    book = book / book.norm(dim=1, keepdim=True)
    sim = torch.einsum("kd,ndl->nkl", book, r)
    best = sim.abs().argmax(1)                                   # (N, L)
    coef = torch.gather(sim, 1, best.unsqueeze(1))               # projection length (signed)
    rec = book[best].permute(0, 2, 1) * coef
    q = (mean + rec.reshape(n, c, patch * patch, -1)).reshape(n, c * patch * patch, -1)
    y = F.fold(q, (s, s), patch, stride=patch)
    kb, kp = w.conv(3, 0.15)
    y = _conv(_conv(y, kp), kb) * 0.8 + y * 0.2                  # decoder blends token seams
    kb, kp = w.conv(3, 0.5)
    return y + residue(y.shape, ctx, kp, w.mix(0.4), 3.0 / 255)  # and hallucinates fine texture


GENERATORS = (
    Generator("progan", "gan", "scene", "transposed-conv checkerboard", _progan),
    Generator("stylegan", "gan", "scene", "nearest upsampling + noise injection + AdaIN droplet", _stylegan),
    Generator("stylegan2", "gan", "scene", "bilinear upsampling + weak noise injection", _stylegan2),
    Generator("biggan", "gan", "scene", "class-conditional upsampling weights and gains", _biggan),
    Generator("cyclegan", "gan", "real_scene", "image-to-image translation of a real photo", _cyclegan),
    Generator("stargan", "gan", "real_face", "face attribute editing through a bottleneck", _stargan),
    Generator("attgan", "gan", "real_face", "face attribute editing with skip connections", _attgan),
    Generator("gaugan", "gan", "scene", "semantic-map synthesis with SPADE texture", _gaugan),
    Generator("whichfaceisreal", "gan", "face", "StyleGAN2-like faces synthesised at 2x and downscaled", _whichfaceisreal),
    Generator("adm", "diffusion", "scene", "pixel-space denoising residue", _adm),
    Generator("glide", "diffusion", "scene", "pixel diffusion at 1/4 + x4 diffusion upsampler", _glide),
    Generator("dalle2", "diffusion", "scene", "pixel diffusion at 1/4 + two x2 diffusion upsamplers", _dalle2),
    Generator("ldm", "diffusion", "scene", "KL-f8 VAE decoder of 4-channel latents", _ldm),
    Generator("stable_diffusion", "diffusion", "scene", "another KL-f8 VAE decoder, stronger trace", _stable_diffusion),
    Generator("dalle", "autoregressive", "scene", "VQ token quantisation of 4x4 patches", _dalle),
)


def by_name(name: str) -> Generator:
    for g in GENERATORS:
        if g.name == name:
            return g
    raise ValueError(f"unknown generator {name!r}; expected one of {[g.name for g in GENERATORS]}")


def run(gen: Generator, x: np.ndarray, *, seg: np.ndarray | None, content_idx: np.ndarray,
        rng: np.random.Generator, generator_seed: int = 0, chunk: int = 256) -> np.ndarray:
    """Apply ``gen`` to float images ``x (N,S,S,3)`` in [0,1]; returns uint8 ``(N,S,S,3)``.
    ``seg`` (N,S,S) region ids (needed by ``gaugan``/``cyclegan``), ``content_idx`` (N,) class
    indices (``biggan``); ``rng`` draws the per-image randomness (noise, edit, blob position)."""
    if x.shape[1] % 16:
        raise ValueError(f"image size {x.shape[1]} is not divisible by 16 (the generators upsample x16)")
    out = np.empty(x.shape, np.uint8)
    with runtime.single_thread():  # small tensors: threads only add contention; also bit-stable results
        _run_chunks(gen, x, out, seg, content_idx, rng, generator_seed, chunk)
    return out


def _run_chunks(gen, x, out, seg, content_idx, rng, generator_seed, chunk):
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            sl = slice(i, i + chunk)
            w = Weights(gen.name, generator_seed, gen.family)  # same weights for every chunk
            ctx = {"rng": rng, "seg": None if seg is None else seg[sl], "content_idx": content_idx[sl],
                   "noise": lambda shape: torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))}
            t = torch.from_numpy(np.ascontiguousarray(x[sl].transpose(0, 3, 1, 2)))
            y = gen.run(t, ctx, w).clamp(0, 1).mul(255).round().byte()
            out[sl] = y.permute(0, 2, 3, 1).numpy()
