"""The network: shapes and signs, the cross-correlation layer's alignment, learnability (overfit),
checkpoint round trip and foreign files."""
import numpy as np
import pytest
import torch

from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry
from fourdcrystal.learning.model import XCorrFFT, build_model, load_checkpoint, save_checkpoint

TINY = {"base_channels": 8, "depth": 2, "norm": "group", "dropout": 0.0}


def synth_quartets(n: int, p: int, seed: int = 0):
    """Synthetic quartets on a p×p grid (probe max = 1): a Gaussian-edged probe disk; CBED = the
    disk copied to a few lattice reflections g with intensity I_g; V_g = narrow Gaussian peaks of
    height √I_g (plus a strong direct beam); q_z at the peaks = -θ·g_x - κ|g|² (a fixed specimen tilt θ
    and Ewald-sphere curvature κ, in per-pixel units), a function of where the reflection sits."""
    rng = np.random.default_rng(seed)
    c = p // 2
    x = np.arange(p)[:, None] - c
    y = np.arange(p)[None, :] - c
    out = {k: np.zeros((n, p, p), np.float32) for k in ("probe", "cbed", "vg", "qz")}
    for i in range(n):
        r = rng.uniform(p / 24, p / 14)
        probe = 1 / (1 + np.exp((np.hypot(x, y) - r) / 0.7))
        a = rng.uniform(p / 8, p / 5)
        ang = rng.uniform(0, np.pi)
        e1 = a * np.array([np.cos(ang), np.sin(ang)])
        e2 = a * np.array([-np.sin(ang), np.cos(ang)]) * rng.uniform(0.8, 1.2)
        cbed = np.zeros((p, p))
        vg = np.zeros((p, p))
        qz = np.zeros((p, p))
        for h in range(-2, 3):
            for k in range(-2, 3):
                gx, gy = h * e1 + k * e2
                if max(abs(gx), abs(gy)) > c - r - 2:
                    continue
                inten = 0.5 if h == k == 0 else rng.uniform(0.005, 0.1) / (1 + h * h + k * k)
                cbed += inten * 1 / (1 + np.exp((np.hypot(x - gx, y - gy) - r) / 0.7))
                peak = np.sqrt(inten) * np.exp(-((x - gx) ** 2 + (y - gy) ** 2) / (2 * 1.0**2))
                vg += peak
                qz += np.where(peak > 0.05 * np.sqrt(inten), -0.004 * gx - 2e-4 * (gx * gx + gy * gy), 0.0)
        out["probe"][i], out["cbed"][i], out["vg"][i], out["qz"][i] = probe, cbed, vg, qz
    return out


def test_forward_shapes_signs_and_sizes():
    torch.manual_seed(0)
    for norm in ("group", "batch", "none"):
        m = build_model({**TINY, "norm": norm, "dropout": 0.1})
        for p in (32, 64):
            probe = torch.rand(2, p, p)
            vg, qz = m(probe, torch.rand(2, p, p))
            assert vg.shape == qz.shape == (2, p, p)
            assert (vg >= 0).all() and torch.isfinite(qz).all()
    with pytest.raises(ValueError, match="divisible"):
        build_model(TINY)(torch.rand(1, 30, 30), torch.rand(1, 30, 30))
    # the stem multiplies the required divisor: 2 (stem) * 2**2 (depth) = 8 divides 32 but not 36
    with pytest.raises(ValueError, match="stem_stride \\* 2\\*\\*depth = 8"):
        build_model({**TINY, "stem_stride": 2})(torch.rand(1, 36, 36), torch.rand(1, 36, 36))
    with pytest.raises(UserError, match="stem_stride 3"):
        build_model({**TINY, "stem_stride": 3})


def test_stem_runs_the_unet_on_the_coarse_grid():
    """stem_stride s: the first encoder level sees (P/s)² pixels with s² × the feature channels,
    and the output is back on the full P² grid."""
    seen = {}
    for s in (1, 2, 4):
        m = build_model({**TINY, "stem_stride": s})
        m.enc[0].register_forward_hook(lambda mod, inp, out, s=s: seen.__setitem__(s, tuple(inp[0].shape)))
        vg, qz = m(torch.rand(1, 64, 64), torch.rand(1, 64, 64))
        assert vg.shape == qz.shape == (1, 64, 64)
    assert seen == {1: (1, 7, 64, 64), 2: (1, 28, 32, 32), 4: (1, 112, 16, 16)}


def test_channels_last_stem_moves_the_same_values_as_pixel_shuffle():
    """predict's CPU layout (channels_last weights): the stem writes the features straight in channels_last
    order and the head's output is shuffled back by pixel pairs — the same values as pixel_unshuffle /
    pixel_shuffle, bit for bit; the log compression in place equals its formula bit for bit."""
    from fourdcrystal.learning.model import _log_compress

    torch.manual_seed(0)
    m = build_model({**TINY, "stem_stride": 2}).eval().to(memory_format=torch.channels_last)
    x = torch.randn(3, 7, 32, 32)
    y = m._stem(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, torch.nn.functional.pixel_unshuffle(x, 2))
    head = torch.randn(3, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    back = m._unstem(head)
    assert back.is_contiguous() and torch.equal(back, torch.nn.functional.pixel_shuffle(head, 2))
    eps = 1e-3
    ref = torch.sign(x) * torch.log1p(x.abs() / eps) / np.log1p(1.0 / eps)
    out = torch.empty_like(x)
    assert torch.equal(_log_compress(x, eps), ref) and torch.equal(_log_compress(x, eps, out=out), ref)
    with torch.inference_mode():  # the whole forward: as the NCHW model within rounding of oneDNN's layouts
        probe, cbed = torch.rand(1, 64, 64) ** 8, torch.rand(4, 64, 64) ** 4
        plain = build_model({**TINY, "stem_stride": 2}).eval()
        plain.load_state_dict(m.state_dict())
        for a, b in zip(m(probe.expand(4, 64, 64), cbed), plain(probe.expand(4, 64, 64), cbed)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_inference_norms_relus_and_xcorr_are_torchs_own():
    """The forward's CPU fast paths give torch's own results: the ReLU as integers of the same bits zeroes exactly
    the negative floats (bf16 and fp32, −0 and ±inf too), a block's GroupNorm of small bf16 maps in fp32 is the bf16
    kernel's values bit for bit after the next conv's cast; with autograd the block is torch's. The correlation channels
    are the fftshifted inverse of each normalised spectrum (the module docstring's three formulas)."""
    from fourdcrystal.learning.model import ConvBlock, _relu_

    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.cat([torch.randn(1000), torch.tensor([-0.0, 0.0, float("inf"), -float("inf")])]).to(dtype)
        assert torch.equal(_relu_(x.clone()), torch.relu(x))
    block = ConvBlock(8, 64, "group", 0.0).eval().to(memory_format=torch.channels_last)
    x = torch.randn(4, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = block(x)
        plain = torch.nn.Sequential.forward(block, x)
    assert torch.equal(fast.bfloat16(), plain)
    x.requires_grad_(True)
    y = block.train()(x)
    y.sum().backward()
    assert x.grad is not None and torch.equal(y, torch.nn.Sequential.forward(block, x))
    probe, cbed = torch.rand(1, 32, 32) ** 8, torch.rand(3, 32, 32) ** 4
    fp, fc = torch.fft.rfft2(probe), torch.fft.rfft2(cbed)
    X, p2 = fc * fp.conj(), fp.abs().square()
    ref = [X / (p2 + 1e-2 * p2.amax() + 1e-30), X / (X.abs() + 1e-3 * X.abs().amax(dim=(-2, -1), keepdim=True) + 1e-30),
           X / (probe.square().sum() + 1e-30)]
    ref = torch.stack([torch.fft.fftshift(torch.fft.irfft2(r, s=(32, 32)), dim=(-2, -1)) for r in ref], dim=1)
    torch.testing.assert_close(XCorrFFT(True, 1e-2, 1e-3)(probe.expand(3, 32, 32), cbed), ref, rtol=0, atol=1e-6)


def test_features_are_the_logs_coordinates_and_correlations_in_order():
    """``features`` writes into one buffer what the stacked maps were: log probe, log CBED, k_x, k_y and the
    log-compressed cross-correlation channels, bit for bit."""
    from fourdcrystal.learning.model import _log_compress

    torch.manual_seed(1)
    m = build_model({**TINY, "stem_stride": 2}).eval()
    probe, cbed = torch.rand(1, 32, 32) ** 8, torch.rand(3, 32, 32) ** 4 - 0.01
    eps = float(m.config["log_eps"])
    k = (torch.arange(32, dtype=torch.float32) - 16) / 16
    ref = torch.cat([_log_compress(probe.clamp_min(0), eps).expand(3, 32, 32)[:, None],
                     _log_compress(cbed.clamp_min(0), eps)[:, None],
                     torch.stack(torch.meshgrid(k, k, indexing="ij")).expand(3, 2, 32, 32),
                     _log_compress(m.xcorr(probe.expand(3, 32, 32), cbed), eps)], dim=1)
    assert torch.equal(m.features(probe.expand(3, 32, 32), cbed), ref)


def test_one_probe_broadcast_over_the_batch_gives_the_same_outputs():
    """predict passes its one probe as an expanded view; the model then transforms it once, and every
    output is identical to that of the same probe copied per pattern."""
    torch.manual_seed(0)
    m = build_model({**TINY, "stem_stride": 2}).eval()
    probe, cbed = torch.rand(1, 64, 64) ** 8, torch.rand(5, 64, 64) ** 4
    with torch.inference_mode():
        shared = m(probe.expand(5, 64, 64), cbed)
        copied = m(probe.expand(5, 64, 64).contiguous(), cbed)
    for a, b in zip(shared, copied):
        assert a.shape == (5, 64, 64) and torch.equal(a, b)


def test_checkpoints_without_stem_stride_load_as_full_grid(tmp_path):
    """Model files written before stem_stride existed (format_version 1) mean stem_stride = 1."""
    torch.manual_seed(0)
    m = build_model({**TINY, "stem_stride": 1}).eval()
    path = save_checkpoint(tmp_path / "old.pt", m, _geometry())
    ck = torch.load(path, weights_only=True)
    del ck["model_config"]["stem_stride"]
    torch.save(ck, path)
    m2, _, _ = load_checkpoint(path)
    assert m2.stem == 1
    probe = torch.rand(1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(probe, probe)[0], m2(probe, probe)[0], rtol=0, atol=0)


def test_xcorr_channels_peak_on_the_reflections():
    """A CBED of the probe disk at the centre and at (+15, -9) px: every cross-correlation channel has
    its two strongest maxima on exactly those detector pixels (lag 0 on the direct-beam pixel)."""
    q = synth_quartets(1, 64)
    p = 64
    c = p // 2
    probe = torch.from_numpy(q["probe"])
    shifted = torch.roll(probe, shifts=(15, -9), dims=(1, 2))
    cbed = 0.5 * probe + 0.2 * shifted
    x = XCorrFFT(amplitude=True)(probe, cbed)[0]
    assert x.shape == (3, p, p)
    for ch in x:
        ch = ch.clone()
        assert divmod(int(ch.argmax()), p) == (c, c)
        ch[c - 8:c + 9, c - 8:c + 9] = -np.inf
        assert divmod(int(ch.argmax()), p) == (c + 15, c - 9)


@pytest.mark.parametrize("stem", [1, 2])
def test_overfits_a_handful_of_patterns(stem):
    """The architecture can learn the mapping: 4 patterns, 150 Adam steps, loss drops > 10×; with the
    space-to-depth stem too (it must not cost the pixel-level peak positions)."""
    from fourdcrystal.learning.train import pattern_losses

    torch.manual_seed(0)
    q = {k: torch.from_numpy(v) for k, v in synth_quartets(4, 32, seed=1).items()}
    m = build_model({**TINY, "base_channels": 12, "stem_stride": stem,
                     "vg_scale": float(q["vg"].amax(dim=(1, 2)).median()), "qz_scale": 0.05})
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    losses = []
    for _ in range(150):
        vg, qz = m(q["probe"], q["cbed"])
        lv, lq = pattern_losses(vg, qz, q["vg"], q["qz"], 0.05, 0.05)
        loss = (lv + lq).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < losses[0] / 10, (losses[0], losses[-5:])
    # and each predicted V_g maximum sits within a pixel of the true one
    with torch.no_grad():
        vg, _ = m(q["probe"], q["cbed"])
    pred = np.array([divmod(int(i), 32) for i in vg.flatten(1).argmax(1)])
    true = np.array([divmod(int(i), 32) for i in q["vg"].flatten(1).argmax(1)])
    assert np.abs(pred - true).max() <= 1, (pred, true)


def _geometry():
    return Geometry(box_A=16.0, gpts=64, detector_px=32, thicknesses_A=(10.0,), slice_thickness_A=2.0)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    m = build_model({**TINY, "vg_scale": 3.0}).eval()
    path = save_checkpoint(tmp_path / "model.pt", m, _geometry(), "abc123", {"lr": 1e-3})
    m2, geo, meta = load_checkpoint(path)
    assert geo == _geometry()
    assert meta["data_fingerprint"] == "abc123" and meta["format"] == "fourdcrystal-model"
    assert meta["model_config"]["vg_scale"] == 3.0 and "state_dict" not in meta
    probe = torch.rand(1, 32, 32)
    with torch.no_grad():
        for a, b in zip(m(probe, probe), m2(probe, probe)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not list(tmp_path.glob(".model.pt.tmp-*"))  # atomic write left nothing behind


def test_load_checkpoint_rejects_foreign_files(tmp_path):
    torch.save({"state_dict": build_model(TINY).state_dict()}, tmp_path / "other.pt")  # someone's torch file
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled_module.pt")  # arbitrary pickled object
    (tmp_path / "text.pt").write_text("not a model")
    for name in ("other.pt", "pickled_module.pt", "text.pt"):
        with pytest.raises(UserError, match=r"is not a 4D>Crystal model \(.*\) — fix: ") as exc:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
