"""The 4D>Crystal network: an FFT cross-correlation layer in front of a U-Net with two heads.

Inputs are a vacuum probe image and a CBED pattern on the same detector grid, both on the
"probe max = 1" scale of the simulated data (docs/CONTRACTS.md).  Outputs are the projected crystal
potential map V_g (≥ 0) and the V_g-weighted out-of-plane component q_z (Å⁻¹, signed) per pixel.

Why a cross-correlation layer before the encoder: a kinematic CBED pattern is the probe disk copied
to every excited reflection, ``cbed ≈ probe ⊛ Σ_g I_g δ(k - g)``.  Dividing the pattern's spectrum by
the probe's undoes that convolution, so the layer hands the encoder a map that already peaks at the
reflections; a plain U-Net would have to learn a disk-sized matched filter from data first.  Three
normalisations of the same spectral product ``X = F(cbed) · conj(F(probe))`` are used, because each
fails differently:

* Wiener ("regularised deconvolution"): ``X / (|F(probe)|² + ε·max|F(probe)|²)`` — sharp peaks whose
  heights are the intensity fractions I_g, but noise grows where the probe spectrum is weak (ε
  limits that);
* phase correlation: ``X / (|X| + ε·max|X|)`` — peak positions independent of intensity (strong
  direct beam and weak reflections look alike), insensitive to the probe's shape errors;
* (``xcorr_amplitude``) the plain matched-filter correlation ``X / Σ probe²`` — the smooth,
  noise-robust correlation amplitude (non-negative for non-negative images).

Each inverse FFT is fftshifted so that lag 0 sits on the direct-beam pixel ``(P//2, P//2)``: a
reflection at pixel ``c + g`` of the CBED appears at pixel ``c + g`` of every channel, aligned with the
labels.  Probe and CBED are real images, so the spectral product is Hermitian and its inverse FFT is
real: the imaginary part is zero up to rounding and is not fed to the network (it would be a dead
channel); the phase information lives in the phase-correlation channel instead.

Two coordinate channels (k_x, k_y relative to the direct beam, in [-1, 1]) are added because q_z
depends on where a reflection sits on the detector (Ewald-sphere curvature and specimen tilt).

Speed — the space-to-depth stem (``stem_stride`` s): the feature channels are rearranged into s² times
as many channels on an s-times coarser grid (``pixel_unshuffle``, lossless and invertible, the trick of
FFDNet and efficient super-resolution networks), the U-Net runs there, and the head predicts s² output
pixels per coarse pixel (``pixel_shuffle``).  On a CPU the full-resolution level of a U-Net is bound
by memory traffic on few channels; removing it made the forward pass 4.4× faster at 128² (fp32,
2 cores: 137 -> 606 patterns/s) with the same parameter count; the stem still sees every pixel, so
sub-pixel information is kept.

Dynamic range: the direct beam is 10²–10⁴ times brighter than weak reflections, so every input
channel is compressed with a (signed) log1p relative to ``log_eps`` (default 1e-3 of the probe
maximum) and mapped to about [-1, 1].  The output heads are scaled by ``vg_scale`` / ``qz_scale``
(typical label magnitudes measured on the training data by fourdcrystal.learning.train) so that a freshly
initialised network starts on the labels' scale; the V_g head works in the same log domain as the
V_g loss (see ``BraggUNet.forward``).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry

FORMAT = "fourdcrystal-model"
FORMAT_VERSION = 1

DEFAULT_MODEL_CONFIG = {
    "base_channels": 16,
    "depth": 3,
    "stem_stride": 2,  # reversible space-to-depth before the encoder (1 = U-Net on the full grid)
    "norm": "group",  # group | batch | none
    "dropout": 0.0,
    "xcorr_amplitude": True,
    "log_eps": 1e-3,  # log compression knee, fraction of the probe maximum
    "wiener_eps": 1e-2,  # Wiener regulariser, fraction of max |F(probe)|²
    "phase_eps": 1e-3,  # phase-correlation regulariser, fraction of max |X|
    "vg_log_knee": 1e-2,  # V_g head: decades resolved below vg_scale (output log domain knee)
    "vg_scale": 1.0,  # typical V_g of a bright reflection (label units); set from training data
    "qz_scale": 0.1,  # typical |q_z| (Å⁻¹); set from training data
}


# keys added after format_version 1 files were written, with the value those files mean
_LEGACY_DEFAULTS = {"stem_stride": 1}


def model_config_from(cfg: dict | None) -> dict:
    """Complete a (possibly partial) ``model`` config section with the defaults above."""
    out = dict(DEFAULT_MODEL_CONFIG)
    out.update({k: v for k, v in (cfg or {}).items() if v is not None})
    unknown = set(out) - set(DEFAULT_MODEL_CONFIG)
    if unknown:
        raise UserError(f"unknown model config keys {sorted(unknown)}",
                        f"use only {sorted(DEFAULT_MODEL_CONFIG)} in the model section")
    if out["norm"] not in ("group", "batch", "none"):
        raise UserError(f"model.norm '{out['norm']}' is not group, batch or none", "set model.norm to group")
    if int(out["stem_stride"]) not in (1, 2, 4):
        raise UserError(f"model.stem_stride {out['stem_stride']} is not 1, 2 or 4", "set model.stem_stride to 2")
    return out


def size_multiple(cfg: dict) -> int:
    """The detector size must be a multiple of this: the stem's stride times one halving per level."""
    return int(cfg["stem_stride"]) * 2 ** int(cfg["depth"])


def _one_if_shared(probe: torch.Tensor) -> torch.Tensor:
    """A batch that is one probe broadcast (batch stride 0, as ``predict`` passes it) as that one (1, P, Q)
    probe, so that per-probe work is done once; any other batch as it is."""
    return probe[:1] if probe.dim() == 3 and probe.shape[0] > 1 and probe.stride(0) == 0 else probe


def _log_compress(x: torch.Tensor, eps: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Signed log1p(|x|/eps) / log1p(1/eps): 1 at x = 1, keeps sign, resolves values down to ~eps.
    Computed in place in ``out`` (a slice of the feature buffer) when given; the sign is copied last
    (one pass instead of sign and product, the same values: only a zero keeps the sign of x's zero)."""
    y = torch.abs(x, out=out) if out is not None else x.abs()
    y.div_(eps).log1p_().div_(math.log1p(1.0 / eps))
    return torch.copysign(y, x, out=y)


class XCorrFFT(nn.Module):
    """Cross-correlation channels of CBED against the probe, on the detector grid (no weights)."""

    def __init__(self, amplitude: bool = True, wiener_eps: float = 1e-2, phase_eps: float = 1e-3):
        super().__init__()
        self.amplitude = amplitude
        self.wiener_eps = wiener_eps
        self.phase_eps = phase_eps

    @property
    def n_channels(self) -> int:
        return 3 if self.amplitude else 2

    def forward(self, probe: torch.Tensor, cbed: torch.Tensor) -> torch.Tensor:
        # FFTs in float32 even under bf16 autocast: bf16 has too few mantissa bits for a spectrum
        # spanning several decades.
        # one probe for the whole batch (predict's expanded view): its spectrum once, broadcast
        probe = _one_if_shared(probe).float()
        cbed = cbed.float()
        fp = torch.fft.rfft2(probe)
        fc = torch.fft.rfft2(cbed)
        x = fc * fp.conj()
        size = probe.shape[-2:]
        p2 = fp.real.square() + fp.imag.square()
        wiener = x / (p2 + self.wiener_eps * p2.amax(dim=(-2, -1), keepdim=True) + 1e-30)
        ax = x.abs()
        phase = x / (ax + self.phase_eps * ax.amax(dim=(-2, -1), keepdim=True) + 1e-30)
        outs = [wiener, phase]
        if self.amplitude:
            energy = probe.square().sum(dim=(-2, -1), keepdim=True) + 1e-30  # (B or 1, 1, 1)
            outs.append(x / energy)
        chans = [torch.fft.fftshift(torch.fft.irfft2(o, s=size), dim=(-2, -1)) for o in outs]
        return torch.stack(chans, dim=1)


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, ch), ch)
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    return nn.Identity()


# GroupNorm of bf16 channels_last maps smaller than this (H·W) with under this many channels per group runs
# in fp32: torch's bf16 kernel for them is 5–7× slower than a cast and the fp32 kernel (benchmarks/RESULTS.md,
# "The forward's norms and ReLUs"); what follows (a conv, or a pool and a concatenation before one) casts it back to
# bf16 as autocast would: the forward's outputs are bit for bit those of the bf16 kernel (measured, tested).
_BF16_GROUP_NORM_MIN_PIXELS = 1024
_BF16_GROUP_NORM_MIN_GROUP = 16


def _group_norm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)``; small bf16 maps with few channels per group in fp32 (the constants above)."""
    c = x.shape[1]
    if x.dtype == torch.bfloat16 and x.shape[-1] * x.shape[-2] < _BF16_GROUP_NORM_MIN_PIXELS \
            and c // norm.num_groups < _BF16_GROUP_NORM_MIN_GROUP:
        return F.group_norm(x.float(), norm.num_groups, norm.weight.float(), norm.bias.float(), norm.eps)
    return norm(x)


_SAME_SIZE_INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def _relu_(x: torch.Tensor) -> torch.Tensor:
    """ReLU in place. Without autograd, as the integers of the same bits: a float's sign bit is its integer's, so
    max(int, 0) zeroes exactly the negative floats (and −0) — one vectorised integer pass, where torch's bf16
    ReLU converts every element to fp32 and back (4.5× slower at 16 × 64², batch 32, one thread)."""
    if x.requires_grad or x.dtype not in _SAME_SIZE_INT:
        return F.relu(x, inplace=True)
    x.view(_SAME_SIZE_INT[x.dtype]).clamp_min_(0)
    return x


class ConvBlock(nn.Sequential):
    """Two 3×3 conv → norm → ReLU layers (ReLU as in the seed design), optional dropout."""

    def __init__(self, cin: int, cout: int, norm: str, dropout: float):
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none"), _norm(norm, cout), nn.ReLU(inplace=True),
                  nn.Conv2d(cout, cout, 3, padding=1, bias=norm == "none"), _norm(norm, cout), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, nn.ReLU):
                x = _relu_(x)
            elif isinstance(layer, nn.GroupNorm):
                x = _group_norm(layer, x)
            else:
                x = layer(x)
        return x


class BraggUNet(nn.Module):
    """XCorrFFT → U-Net encoder/decoder → heads V_g (softplus, ≥ 0) and q_z (signed, Å⁻¹).

    ``model(probe, cbed)`` with (B, P, P) tensors returns ``(vg, qz)``, each (B, P, P).  P must be
    divisible by ``stem_stride * 2**depth`` (128, 256, 512 all work with the defaults).
    """

    def __init__(self, **cfg):
        super().__init__()
        cfg = model_config_from(cfg)
        self.config = cfg
        c, depth = int(cfg["base_channels"]), int(cfg["depth"])
        self.depth = depth
        self.stem = int(cfg["stem_stride"])
        self.xcorr = XCorrFFT(cfg["xcorr_amplitude"], cfg["wiener_eps"], cfg["phase_eps"])
        # log probe, log CBED, k_x and k_y coordinates, cross-correlation channels; each becomes
        # stem² channels on the coarse grid
        cin = (4 + self.xcorr.n_channels) * self.stem**2
        widths = [c * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList()
        for w in widths[:-1]:
            self.enc.append(ConvBlock(cin, w, cfg["norm"], cfg["dropout"]))
            cin = w
        self.bottleneck = ConvBlock(widths[-2], widths[-1], cfg["norm"], cfg["dropout"])
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(depth)):
            self.up.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2))
            self.dec.append(ConvBlock(2 * widths[i], widths[i], cfg["norm"], cfg["dropout"]))
        # 2 heads (V_g, q_z) for each of the stem² fine pixels of a coarse pixel
        self.head = nn.Conv2d(widths[0], 2 * self.stem**2, 1)
        # start at u = 0 for both heads: V_g at t = log(2)/4 (~1 % of vg_scale), q_z at 0
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def features(self, probe: torch.Tensor, cbed: torch.Tensor) -> torch.Tensor:
        """(B, 7 or 6, P, P): log probe, log CBED, k_x, k_y and the cross-correlation channels, written
        into one buffer (no stack or cat of full-size maps: at 128² they cost a tenth of the CPU forward)."""
        eps = float(self.config["log_eps"])
        xc = self.xcorr(probe, cbed)
        b, p, q = probe.shape
        x = torch.empty(b, 4 + xc.shape[1], p, q, device=cbed.device, dtype=xc.dtype)
        x[:, 0] = _log_compress(_one_if_shared(probe).float().clamp_min(0), eps)
        _log_compress(cbed.float().clamp_min(0), eps, out=x[:, 1])
        # detector coordinates relative to the direct beam (CoordConv): q_z depends on where a
        # reflection sits — Ewald-sphere curvature -λ|g|²/2 and tilt -θ·g — which plain
        # translation-equivariant convolutions cannot see
        x[:, 2] = ((torch.arange(p, device=x.device, dtype=torch.float32) - p // 2) / (p // 2))[:, None]
        x[:, 3] = ((torch.arange(q, device=x.device, dtype=torch.float32) - q // 2) / (q // 2))[None, :]
        _log_compress(xc, eps, out=x[:, 4:])
        return x

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """``pixel_unshuffle`` by ``stem_stride``. For a stride of 2 into channels_last weights (predict's
        CPU layout) the same values are written straight in channels_last order, each horizontal pixel
        pair moved as one 8-byte word, the even rows and the odd rows by one copy each (a 32 × 7 × 128²
        batch, 1 / 2 threads: 3.5 / 1.7 ms — on one thread 1.9 ms pattern by pattern —, against 11.4 / 4.8
        for one copy of all pairs and 14.3 / 11.2 for pixel_unshuffle plus oneDNN's layout conversion, which
        were a tenth of the CPU forward)."""
        s = self.stem
        if s == 1:
            return x
        if s != 2 or x.dtype != torch.float32 or \
                not self.enc[0][0].weight.is_contiguous(memory_format=torch.channels_last):
            return F.pixel_unshuffle(x, s)
        b, c, p, q = x.shape
        # x as (b, c, p/2, i, q/2) pairs -> (b, p/2, q/2, c, i): channel 4c + 2i + j, as pixel_unshuffle
        pairs = x.contiguous().view(torch.int64).view(b, c, p // 2, 2, q // 2)
        y = torch.empty(b, p // 2, q // 2, c, 2, dtype=torch.int64, device=x.device)
        # per row parity (the copy's innermost step is whole channels, not pairs); on a CPU per pattern too, so that
        # its source and destination fit a core's L2 cache (1.9 against 3.4 ms for the batch at once)
        for k in (range(b) if x.is_cpu else (slice(None),)):
            for i in range(2):
                y[k, ..., i].copy_(pairs[k, :, :, i].movedim(-3, -1))
        return y.view(b, p // 2, q // 2, 2 * c).view(torch.float32).permute(0, 3, 1, 2)

    def _unstem(self, out: torch.Tensor) -> torch.Tensor:
        """``pixel_shuffle`` of the head's output to (B, 2, P, P), contiguous: the inverse of ``_stem``,
        by the same pairs where the head's output is channels_last."""
        s = self.stem
        if s == 1:
            return out
        if s != 2 or out.dtype != torch.float32 or out.is_contiguous() or \
                not out.is_contiguous(memory_format=torch.channels_last):
            return F.pixel_shuffle(out, s)
        b, k, h, w = out.shape
        # channels_last memory (b, h, w, 4k' + 2i + j) as pairs (b, h, w, k', i) -> (b, k', h, i, w)
        pairs = out.permute(0, 2, 3, 1).view(torch.int64).view(b, h, w, k // 4, 2)
        return pairs.permute(0, 3, 1, 4, 2).reshape(b, k // 4, 2 * h, w).view(torch.float32)

    def forward(self, probe: torch.Tensor, cbed: torch.Tensor):
        if probe.shape != cbed.shape or probe.dim() != 3:
            raise ValueError(f"model(probe, cbed) needs two (B, P, P) tensors of one shape; got "
                             f"{tuple(probe.shape)} and {tuple(cbed.shape)}")
        m = size_multiple(self.config)
        if probe.shape[-1] % m or probe.shape[-2] % m:
            raise ValueError(f"pattern size {tuple(probe.shape[-2:])} is not divisible by stem_stride * 2**depth = {m}")
        x = self._stem(self.features(probe, cbed))
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        # the 1×1 head in fp32 even under bf16 autocast: its output is the log-domain V_g, where
        # bf16's 8-bit mantissa would step V_g by several % and flatten the maxima peak finding needs
        with torch.autocast(x.device.type, enabled=False):
            out = self._unstem(self.head(x.float()))
        # V_g head in the log domain: t = softplus(u) >= 0 is the log-compressed V_g
        # (t = log1p(V / (knee·vg_scale)) / log1p(1/knee)), so O(1) steps of u span the decades between
        # background and the direct beam; a linear softplus head needs thousands of Adam steps to
        # push the background down by a decade.  Clamped so that expm1 cannot overflow.
        knee = float(self.config["vg_log_knee"])
        # beta = 4: a sharp knee, so both background (u < -1 -> t < 0.005) and peaks (slope -> 1) stay
        # within O(1) of the initial u = 0, where the slope is 0.5 (trainable from the first step)
        t = F.softplus(out[:, 0], beta=4.0).clamp_max(4.0)
        vg = float(self.config["vg_scale"]) * knee * torch.expm1(math.log1p(1.0 / knee) * t)
        qz = out[:, 1] * float(self.config["qz_scale"])
        return vg, qz


def build_model(cfg: dict | None) -> BraggUNet:
    return BraggUNet(**model_config_from(cfg))


def configure_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW as in nanoGPT: weight decay only on the conv weights (dim >= 2), never on biases or norms.

    ``foreach=False``: the per-parameter loop, whose rounding the CPU tests pin down."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": float(weight_decay)},
                              {"params": no_decay, "weight_decay": 0.0}], lr=float(lr), betas=(0.9, 0.99),
                             foreach=False)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def checkpoint_dict(model: nn.Module, geometry: Geometry | dict, data_fingerprint: str | None,
                    train_config: dict | None, **extra) -> dict:
    m = _unwrap(model)
    geo = geometry.to_dict() if isinstance(geometry, Geometry) else dict(geometry)
    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "state_dict": {k: v.detach().cpu() for k, v in m.state_dict().items()},
            "model_config": dict(m.config), "geometry": geo, "data_fingerprint": data_fingerprint,
            "train_config": dict(train_config or {}), **extra}


def save_checkpoint(path, model: nn.Module, geometry: Geometry | dict, data_fingerprint: str | None = None,
                    train_config: dict | None = None, **extra) -> Path:
    """Write the model file atomically (a killed writer never leaves a half-written model.pt)."""
    from fourdcrystal.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(checkpoint_dict(model, geometry, data_fingerprint, train_config, **extra), tmp)
    return path


def load_checkpoint(path, map_location="cpu"):
    """Load a model file: returns ``(model, geometry, meta)`` with the model in eval mode.

    ``meta`` holds everything in the file except the weights (format_version, model_config,
    data_fingerprint, train_config, ...).  Any file that is not ours raises a one-line UserError.
    """
    path = Path(path)
    fix = "pass a model.pt written by `snakemake results/model/model.pt` (fourdcrystal.learning.train)"
    if not path.is_file():
        raise UserError(f"model file {path} does not exist", fix)
    try:
        # weights_only: never execute pickled code from a file a user hands us
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # not a torch file, or one holding arbitrary objects
        raise UserError(f"{path} is not a 4D>Crystal model (unreadable: {type(exc).__name__})", fix) from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        what = f"format {ck.get('format')!r}" if isinstance(ck, dict) else f"a {type(ck).__name__}"
        raise UserError(f"{path} is not a 4D>Crystal model ({what})", fix)
    if int(ck.get("format_version", -1)) > FORMAT_VERSION:
        raise UserError(f"{path} is a 4D>Crystal model of format_version {ck['format_version']}, newer than this "
                        f"code ({FORMAT_VERSION})", "upgrade fourdcrystal")
    try:
        model = build_model({**_LEGACY_DEFAULTS, **ck["model_config"]})
        # assign: the file's tensors become the parameters (copying them into the fresh ones took 40 ms,
        # measured alone; within a whole `predict` start-up the VM's spread hides it)
        model.load_state_dict(ck["state_dict"], assign=True)
        geometry = Geometry.from_dict(ck["geometry"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise UserError(f"{path} is not a usable 4D>Crystal model ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]})", fix) from None
    model.to(map_location if map_location is not None else "cpu").eval()
    meta = {k: v for k, v in ck.items() if k != "state_dict"}
    return model, geometry, meta
