"""QA holds the source and the reference on the piece's box only: the same metrics and evidence as from
the whole frames, and no read outside the box goes unnoticed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.simulator import render_scene
from qa.evidence import gather_evidence, read_scene
from qa.held import Held, hold, qa_box, qa_level
from qa.metrics import compute_metrics, detail_loss_map
from tasks.frame import Frame
from tasks.ops import gaussian_blur


def _t(x: np.ndarray) -> torch.Tensor:
    x = x if x.ndim == 3 else x[..., None]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float()


@pytest.fixture(scope="module")
def earring():
    """A small piece off-centre in a large frame, so its box is a small part of it, with a retouch to measure."""
    scene = render_scene(np.random.default_rng([5, 13]), (900, 600), piece="earring", background="grey_sweep")
    source, image, a = _t(scene.source), _t(scene.clean), _t(scene.alpha.astype(np.float32))
    softened = gaussian_blur(image, 2.0)       # the retouch lost the piece's fine detail
    result = Frame(softened * a + (1 - a), alpha=a, foreground=softened,
                   masks={"metal": _t((scene.metal > 0.5).astype(np.float32))})
    reference = Frame(image)
    return source, reference, result, read_scene(source, reference, a)


def _whole(source, reference, result, scene) -> Held:
    h, w = reference.image.shape[-2:]
    held = hold(source, reference, result.alpha, scene)
    return Held(source, reference.image, None, (slice(0, h), slice(0, w)), (h, w), held.cast, scene)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])) for k in a)


def test_the_held_box_is_a_copy_of_part_of_the_frame(earring):
    source, reference, result, scene = earring
    held = hold(source, reference, result.alpha, scene)
    rows, cols = held.box
    assert held.box == qa_box(result.alpha, (600, 900))
    assert held.reference.numel() < 0.6 * reference.image.numel()      # the point: most of the frame goes
    assert torch.equal(held.reference, reference.image[..., rows, cols])
    assert torch.equal(held.source, source[..., rows, cols])
    # copies, not views of the frame (which would keep it alive): one block for the two
    assert held.reference.untyped_storage().nbytes() == 2 * held.reference.numel() * 4
    assert held.source.untyped_storage().data_ptr() == held.reference.untyped_storage().data_ptr()


def test_qa_on_the_held_box_is_qa_on_the_whole_frames(earring):
    source, reference, result, scene = earring
    held, whole = hold(source, reference, result.alpha, scene), _whole(*earring)
    metrics = compute_metrics(held, result)
    assert _same(metrics, compute_metrics(whole, result))
    assert metrics["detail_retention"] < 0.5 and metrics["mask_coverage"] > 0   # it measured the retouch
    assert np.array_equal(detail_loss_map(held, result), detail_loss_map(whole, result))
    ev, ev_whole = gather_evidence(held, result, light_known=False), gather_evidence(whole, result, light_known=False)
    assert _same(ev.metrics, ev_whole.metrics)
    assert [f.box for f in ev.findings] == [f.box for f in ev_whole.findings]
    assert np.array_equal(ev.overlay, ev_whole.overlay)


def test_a_read_outside_the_held_box_is_an_error(earring):
    source, reference, result, scene = earring
    held = hold(source, reference, result.alpha, scene)
    rows, cols = held.box
    with pytest.raises(ValueError, match="outside the held box"):
        held.reference_on((slice(rows.start, rows.stop + 1), cols))
    grown = result.replace(alpha=torch.ones_like(result.alpha))     # a stage that grew the matte
    with pytest.raises(ValueError, match="outside the held box"):
        compute_metrics(held, grown)


def test_qa_reads_a_frame_twice_the_work_size_or_more_at_a_pyramid_level():
    """QA's level never reads coarser than the cut-out decides (``work_size``): a 24 MP back's 6000 px at
    half size, a 3872 px photo and anything under twice the work size whole."""
    assert qa_level((4000, 6000), 3000) == 2 and qa_level((6000, 9000), 3000) == 3
    assert qa_level((3872, 3872), 3000) == qa_level((800, 1200), 3000) == qa_level((4000, 6000), None) == 1
