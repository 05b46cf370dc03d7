import torch

from tasks.frame import SOFT_STEP, Frame


def test_masks_of_0s_and_1s_are_kept_as_bool_and_soft_ones_as_they_are():
    box = (slice(3, 53), slice(5, 75))     # views of a larger frame, as ``Frame.cropped`` hands them on
    image = torch.rand(1, 3, 60, 80)[..., box[0], box[1]]
    binary = (torch.rand(1, 1, 60, 80) > 0.5).float()
    soft = binary.clone()
    soft[0, 0, 4, 6] = 0.5           # one soft value off the strided sample the check looks at first
    assert (4 - 3) % SOFT_STEP and (6 - 5) % SOFT_STEP
    sampled = binary.clone()
    sampled[0, 0, 3 + SOFT_STEP, 5 + SOFT_STEP] = 0.25
    frame = Frame(image, masks={k: m[..., box[0], box[1]] for k, m in
                                (("binary", binary), ("soft", soft), ("sampled", sampled))})
    assert frame.masks["binary"].dtype == torch.bool
    assert torch.equal(frame.masks["binary"], binary[..., box[0], box[1]] > 0.5)
    assert torch.equal(frame.masks["soft"], soft[..., box[0], box[1]])
    assert torch.equal(frame.masks["sampled"], sampled[..., box[0], box[1]])
