"""denoise: the piece's chroma noise smoothed, its luminance, its stones' colour and the backdrop kept."""

import pytest
import torch

from helpers import DEVICES
from tasks.color import LUMINANCE
from tasks.denoise import DenoiseParams, chroma_reach, reduce_chroma_noise
from tasks.frame import Frame, luminance
from tasks.ops import erode, gaussian_blur
from tasks.pipeline import _near_piece

GOLD = (0.75, 0.50, 0.42)       # rose gold, linear
RUBY = (0.45, 0.03, 0.05)
SWEEP = (0.80, 0.80, 0.80)


def _scene(noise: float, device: str = "cpu", seed: int = 0) -> tuple[Frame, torch.Tensor, torch.Tensor]:
    """A rose-gold disc with a ruby set in it on a white sweep, with the camera's chroma noise of a
    demosaiced high-ISO frame (each channel's own noise, blurred into 2-4 px blotches), and its masks:
    (frame, gold, ruby)."""
    h, w = 240, 320
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    disc = ((yy - 120) ** 2 + (xx - 160) ** 2) < 90 ** 2
    ruby = (yy - 120).abs().lt(20) & (xx - 160).abs().lt(20)
    clean = torch.tensor(SWEEP).view(3, 1, 1).expand(3, h, w).clone()
    clean[:, disc] = torch.tensor(GOLD).view(3, 1)
    clean[:, ruby] = torch.tensor(RUBY).view(3, 1)
    g = torch.Generator().manual_seed(seed)
    blotches = gaussian_blur(torch.randn((1, 3, h, w), generator=g), 1.2) * 2.5    # ~unit std, 2-4 px wide
    image = (clean[None] * (1 + noise * blotches)).clamp(0, 1)
    alpha = disc.float()[None, None]
    return Frame(image.to(device), alpha=alpha.to(device)), disc & ~ruby, ruby


def _ratio_std(image: torch.Tensor, where: torch.Tensor) -> float:
    """Standard deviation of R/Y over ``where``: the chroma noise there."""
    y = luminance(image)[0, 0]
    return float((image[0, 0] / y)[where].std())


@pytest.mark.parametrize("device", DEVICES)
def test_the_pieces_chroma_noise_is_smoothed_and_its_luminance_kept(device):
    frame, gold, ruby = _scene(0.08, device)
    out = reduce_chroma_noise(frame, DenoiseParams())
    inner = erode(gold[None, None].float(), 8)[0, 0].bool().cpu()      # away from the disc's and ruby's edges
    before, after = _ratio_std(frame.image.cpu(), inner), _ratio_std(out.image.cpu(), inner)
    assert after < before / 2, (before, after)      # 0.061 -> 0.024
    assert float((luminance(out.image) - luminance(frame.image)).abs().max()) < 1e-5
    assert torch.equal(out.image[..., frame.alpha[0, 0] == 0], frame.image[..., frame.alpha[0, 0] == 0])  # backdrop
    assert out.image.device == frame.image.device and "chroma smoothed" in out.notes[-1]


def test_a_ruby_in_its_seat_keeps_its_colour_and_its_edge():
    """The ruby's chroma differs from the gold's far beyond the noise: neither is mixed into the other,
    up to the pixel beside their edge."""
    frame, gold, ruby = _scene(0.08)
    out = reduce_chroma_noise(frame, DenoiseParams())
    ratio = out.image[0, 0] / luminance(out.image)[0, 0]
    ruby_ratio = RUBY[0] / sum(c * w for c, w in zip(RUBY, LUMINANCE))
    gold_ratio = GOLD[0] / sum(c * w for c, w in zip(GOLD, LUMINANCE))
    rows = slice(110, 131)                       # across the ruby's left edge (column 141), its middle rows
    inside, outside = ratio[rows, 142].mean(), ratio[rows, 139].mean()     # 1 px in, 2 px out
    assert abs(float(inside) / ruby_ratio - 1) < 0.1, float(inside)
    assert abs(float(outside) / gold_ratio - 1) < 0.1, float(outside)


def test_a_clean_frame_is_left_as_it_is():
    frame, _, _ = _scene(0.002)
    out = reduce_chroma_noise(frame, DenoiseParams())
    assert torch.equal(out.image, frame.image) and "left as it is" in out.notes[-1]
    assert reduce_chroma_noise(frame, DenoiseParams(chroma_radius=0)) is frame
    assert "no cut-out" in reduce_chroma_noise(Frame(frame.image), DenoiseParams()).notes[-1]


def test_near_the_piece_it_gives_what_the_whole_frame_gives():
    """The noise is read on a band beside the piece, so the piece's box grown by the stage's reach
    holds all the stage reads."""
    frame, _, _ = _scene(0.08, seed=1)
    frame = frame.replace(image=torch.nn.functional.pad(frame.image, (200, 0, 0, 160), value=0.8),
                          alpha=torch.nn.functional.pad(frame.alpha, (200, 0, 0, 160)))
    params = DenoiseParams()
    whole = reduce_chroma_noise(frame, params)
    near = _near_piece(reduce_chroma_noise, frame, params, frame.alpha > 0.5, chroma_reach(params))
    assert near.notes == whole.notes
    assert float((near.image - whole.image).abs().max()) < 1e-6
