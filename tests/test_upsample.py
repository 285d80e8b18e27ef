"""Bilinear upsampling: torch's align_corners=False geometry, float64 lerp arithmetic."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference as R
from pipeline.upsample import axis_pieces, bilinear_weights, upsample

SIZES = [((7, 7), (112, 112)), ((13, 13), (112, 112)), ((7, 7), (32, 32)), ((1, 1), (5, 5)),
         ((3, 5), (17, 11)), ((7, 7), (7, 7)), ((14, 14), (113, 113)), ((6, 9), (224, 50)),
         ((2, 1), (9, 4))]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("src,dst", SIZES)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch_interpolate(src, dst, device):
    g = torch.Generator().manual_seed(0)
    a = torch.rand((2, 3) + src, generator=g, dtype=torch.float64).to(device)
    ref = F.interpolate(a, size=dst, mode="bilinear", align_corners=False)
    out = upsample(a, dst)
    assert out.dtype == torch.float64 and out.shape == ref.shape and out.device == a.device
    assert (out - ref).abs().max().item() < 1e-12


@pytest.mark.parametrize("src,dst", SIZES)
def test_bit_identical_to_reference(src, dst):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2,) + src).astype(np.float16)
    np.testing.assert_array_equal(upsample(torch.as_tensor(a), dst).numpy(),
                                  R.upsample_ref(a, *dst))


@pytest.mark.parametrize("src,dst", SIZES)
def test_weights_match_reference_coordinates(src, dst):
    for n_in, n_out in zip(src, dst):
        i0, i1, w1 = bilinear_weights(n_in, n_out)
        for d in range(n_out):
            assert (i0[d], i1[d], w1[d]) == R.source_coord(d, n_in, n_out)
        assert ((w1 >= 0) & (w1 < 1)).all()


@pytest.mark.parametrize("src,dst", SIZES)
def test_constant_maps_stay_exactly_constant(src, dst):
    rng = np.random.default_rng(2)
    for value in [0.0, 1.0, 0.1, np.float16(3.14159), 1e-30, 12345.678, -7.25,
                  float(np.float32(rng.random()))]:
        a = torch.full((1,) + src, float(value), dtype=torch.float64)
        out = upsample(a, dst)
        assert bool((out == float(value)).all()), value


@pytest.mark.parametrize("seed", range(5))
def test_never_exceeds_inputs(seed):
    rng = np.random.default_rng(seed)
    for src, dst in SIZES:
        for dt in (np.float16, np.float32):
            a = (rng.standard_normal((50,) + src) * 10 ** rng.uniform(-3, 3)).astype(dt)
            if seed % 2:
                a = np.maximum(a, 0)
            out = upsample(torch.as_tensor(a), dst).numpy()
            amax = a.reshape(50, -1).max(1).astype(np.float64)
            amin = a.reshape(50, -1).min(1).astype(np.float64)
            assert (out.reshape(50, -1).max(1) <= amax).all()
            assert (out.reshape(50, -1).min(1) >= amin).all()


def test_cell_never_exceeds_its_corners():
    """The tally skips cells whose four corners are <= T: S <= max(corners) exactly."""
    rng = np.random.default_rng(7)
    for src, dst in SIZES:
        a = rng.standard_normal((20,) + src).astype(np.float16).astype(np.float64)
        out = upsample(torch.as_tensor(a), dst).numpy()
        y0, y1, _ = bilinear_weights(src[0], dst[0])
        x0, x1, _ = bilinear_weights(src[1], dst[1])
        corners = np.stack([a[:, y0][:, :, x0], a[:, y0][:, :, x1],
                            a[:, y1][:, :, x0], a[:, y1][:, :, x1]])
        assert (out <= corners.max(0)).all()


@pytest.mark.parametrize("src,dst", SIZES)
def test_axis_pieces_partition_the_output(src, dst):
    for n_in, n_out in zip(src, dst):
        i0, i1, w1 = bilinear_weights(n_in, n_out)
        pc = axis_pieces(n_in, n_out)
        pos = pc.pos[pc.pos >= 0]
        np.testing.assert_array_equal(np.sort(pos), np.arange(n_out))
        for p in range(len(pc.lo)):
            valid = pc.pos[p] >= 0
            assert valid[0]
            assert (i0[pc.pos[p][valid]] == pc.lo[p]).all()
            assert (i1[pc.pos[p][valid]] == pc.hi[p]).all()
            np.testing.assert_array_equal(pc.w[p][valid], w1[pc.pos[p][valid]])


def test_align_corners_matters():
    """The definition fixes align_corners=False; True gives visibly different masks."""
    rng = np.random.default_rng(3)
    a = torch.as_tensor(np.maximum(rng.standard_normal((16, 7, 7)), 0))
    ours = upsample(a, (112, 112))
    false = F.interpolate(a[None], size=(112, 112), mode="bilinear", align_corners=False)[0]
    true = F.interpolate(a[None], size=(112, 112), mode="bilinear", align_corners=True)[0]
    T = float(np.quantile(ours.numpy(), 0.95))
    m_ours, m_false, m_true = ours > T, false > T, true > T
    diff_false = int((m_ours != m_false).sum())
    diff_true = int((m_ours != m_true).sum())
    assert diff_false <= 2                                   # only exact-tie rounding
    assert diff_true > 0.05 * int(m_ours.sum())              # several % of the mask moves
