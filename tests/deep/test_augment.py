import math

import pytest

torch = pytest.importorskip("torch")
tvf = pytest.importorskip("torchvision.transforms.v2.functional")
transforms = pytest.importorskip("torchvision.transforms")

from gaussood.deep.augment import (  # noqa: E402
    CIFAR10_MEAN,
    CIFAR10_STD,
    SimCLRAugment,
    _jitter,
    _sample_boxes,
    eval_transform,
    two_views,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
OFF = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0,
           normalize=False)


def gen(seed, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def uint8_images(b=6, h=32, w=32, seed=0):
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=gen(seed))


def float_images(b=6, h=32, w=32, seed=0, dtype=torch.float32):
    return torch.rand(b, 3, h, w, generator=gen(seed), dtype=dtype)


def test_shape_dtype_and_range():
    images = uint8_images(b=5, h=40, w=36)
    out = SimCLRAugment(size=32, normalize=False)(images, gen(1))
    assert out.shape == (5, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    normed = SimCLRAugment(size=32)(images, gen(1))
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(normed, (out - mean) / std)
    assert SimCLRAugment(size=16)(float_images(dtype=torch.float64), gen(1)).dtype == torch.float64


def test_same_seed_same_views_other_seed_other_views():
    images, augment = uint8_images(), SimCLRAugment()
    a, b, c = augment(images, gen(7)), augment(images, gen(7)), augment(images, gen(8))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.1


def test_two_views_are_two_draws_of_one_transform():
    images, augment = uint8_images(), SimCLRAugment()
    v1, v2 = two_views(augment, images, gen(3))
    g = gen(3)
    assert torch.equal(v1, augment(images, g)) and torch.equal(v2, augment(images, g))
    assert (v1 - v2).abs().max() > 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_op_settings_give_the_identity(dtype):
    images = float_images(dtype=dtype)
    torch.testing.assert_close(SimCLRAugment(**OFF)(images, gen(0)), images, atol=1e-5, rtol=0)
    u8 = uint8_images()
    torch.testing.assert_close(SimCLRAugment(**OFF)(u8, gen(0)), u8.float() / 255, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_flip_only_is_the_horizontal_mirror(dtype, atol):
    # exact up to the rounding of the sampling grid (a few ulps)
    augment = SimCLRAugment(size=24, **{**OFF, "flip_p": 1.0})
    images = float_images(h=24, w=24, dtype=dtype)
    torch.testing.assert_close(augment(images, gen(0)), images.flip(-1), atol=atol, rtol=0)
    u8 = uint8_images(h=24, w=24)
    assert torch.equal((augment(u8, gen(0)) * 255).round().to(torch.uint8), u8.flip(-1))


def test_gray_only_gives_the_601_luma_in_three_channels():
    images = float_images()
    out = SimCLRAugment(**{**OFF, "gray_p": 1.0})(images, gen(0))
    r, g, b = images.unbind(1)
    luma = 0.2989 * r + 0.587 * g + 0.114 * b  # ITU-R 601-2 as rounded by torchvision
    for c in range(3):
        torch.testing.assert_close(out[:, c], luma, atol=1e-5, rtol=0)
    torch.testing.assert_close(out, tvf.rgb_to_grayscale(images, num_output_channels=3), atol=1e-6, rtol=0)


def test_box_is_the_exact_crop_when_no_resize_is_needed():
    # scale 1/4 and ratio 1 on 32 x 32 -> always 16 x 16 boxes; size 16 samples pixel centres.
    images = float_images(b=64)
    out = SimCLRAugment(size=16, **{**OFF, "crop_scale": (0.25, 0.25)})(images, gen(5))
    top, left, h, w = _sample_boxes(64, 32, 32, (0.25, 0.25), (1.0, 1.0), gen(5))  # same first draws
    assert (h == 16).all() and (w == 16).all()
    assert top.min() == 0 and top.max() == 16 and left.min() == 0 and left.max() == 16
    for k in range(64):
        t, l = int(top[k]), int(left[k])
        torch.testing.assert_close(out[k], images[k, :, t:t + 16, l:l + 16], atol=1e-5, rtol=0)


def test_crop_box_statistics_match_torchvision():
    n, (height, width) = 20_000, (32, 40)
    top, left, h, w = _sample_boxes(n, height, width, (0.08, 1.0), (3 / 4, 4 / 3), gen(11))
    assert (top >= 0).all() and (top + h <= height).all() and (left >= 0).all() and (left + w <= width).all()
    torch.manual_seed(11)
    img = torch.empty(3, height, width)
    ref = torch.tensor([transforms.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3])
                        for _ in range(n)], dtype=torch.float64)
    area, ref_area = h * w / (height * width), ref[:, 2] * ref[:, 3] / (height * width)
    # sd of the area fraction is about 0.23: the difference of two means has se 0.0023; 0.012 is 5 se
    assert area.mean().item() == pytest.approx(ref_area.mean().item(), abs=0.012)
    assert area.std().item() == pytest.approx(ref_area.std().item(), abs=0.012)
    log_r, ref_log_r = torch.log(w / h), torch.log(ref[:, 3] / ref[:, 2])
    assert log_r.mean().item() == pytest.approx(ref_log_r.mean().item(), abs=0.01)
    # the offset is uniform over the free room: mean top / (height - h) near 1/2
    room = height - h > 0
    assert (top[room] / (height - h[room])).mean().item() == pytest.approx(0.5, abs=0.01)


def test_fallback_is_torchvisions_centre_crop():
    # ratio 2 cannot fit a full-area box in a square image: all ten tries fail
    top, left, h, w = _sample_boxes(4, 30, 30, (1.0, 1.0), (2.0, 2.0), gen(0))
    ref = transforms.RandomResizedCrop.get_params(torch.empty(3, 30, 30), [1.0, 1.0], [2.0, 2.0])
    for k in range(4):
        assert (int(top[k]), int(left[k]), int(h[k]), int(w[k])) == ref


def test_jitter_matches_torchvision_per_factor():
    images = float_images(b=5)
    f = torch.tensor([0.6, 0.9, 1.0, 1.2, 1.4])
    hue = torch.tensor([-0.1, -0.03, 0.0, 0.05, 0.1])
    cases = [("brightness", f, tvf.adjust_brightness, 1e-6), ("contrast", f, tvf.adjust_contrast, 1e-6),
             ("saturation", f, tvf.adjust_saturation, 1e-6), ("hue", hue, tvf.adjust_hue, 1e-5)]
    for name, factors, ref_fn, tol in cases:
        out = _jitter(images, **{name: factors})
        ref = torch.stack([ref_fn(images[k], float(factors[k])) for k in range(5)])
        torch.testing.assert_close(out, ref, atol=tol, rtol=0, msg=name)
    # brightness also against the classic (v1) functional API
    ref_v1 = torch.stack([transforms.functional.adjust_brightness(images[k], float(f[k])) for k in range(5)])
    torch.testing.assert_close(_jitter(images, brightness=f), ref_v1, atol=1e-6, rtol=0)


def test_full_jitter_is_torchvision_in_fixed_order():
    images = float_images(b=4)
    b, c = torch.tensor([0.7, 1.3, 1.0, 0.9]), torch.tensor([1.2, 0.6, 1.4, 1.0])
    s, h = torch.tensor([0.8, 1.3, 0.6, 1.1]), torch.tensor([0.08, -0.05, 0.02, -0.1])
    out = _jitter(images, b, c, s, h)
    for k in range(4):
        ref = tvf.adjust_brightness(images[k], float(b[k]))
        ref = tvf.adjust_contrast(ref, float(c[k]))
        ref = tvf.adjust_saturation(ref, float(s[k]))
        ref = tvf.adjust_hue(ref, float(h[k]))
        torch.testing.assert_close(out[k], ref, atol=1e-5, rtol=0)


def test_probabilities_are_calibrated():
    # 4000 constant-colour 4 x 4 images: flips change nothing, so count gray and jittered ones
    n = 4000
    colour = torch.tensor([0.8, 0.3, 0.1]).view(1, 3, 1, 1)
    images = colour.expand(n, 3, 4, 4).contiguous()
    gray = SimCLRAugment(size=4, **{**OFF, "gray_p": 0.2})(images, gen(0))
    rate = (gray[:, 0, 0, 0] - gray[:, 2, 0, 0]).abs().lt(1e-6).double().mean().item()
    assert rate == pytest.approx(0.2, abs=0.03)  # se 0.0063
    jit = SimCLRAugment(size=4, **{**OFF, "jitter_p": 0.8})(images, gen(1))
    rate = (jit - images).abs().amax(dim=(1, 2, 3)).gt(1e-6).double().mean().item()
    assert rate == pytest.approx(0.8, abs=0.03)
    ramp = torch.linspace(0, 1, 4).expand(n, 3, 4, 4).contiguous()
    flipped = SimCLRAugment(size=4, **{**OFF, "flip_p": 0.5})(ramp, gen(2))
    assert flipped[:, 0, 0, 0].gt(0.5).double().mean().item() == pytest.approx(0.5, abs=0.03)


def test_channels_last_input_gives_the_same_views():
    images = uint8_images(b=4)
    augment = SimCLRAugment()
    cl = images.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(augment(cl, gen(9)), augment(images, gen(9)), atol=1e-6, rtol=0)


def test_eval_transform_only_normalises():
    images = uint8_images(b=3)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(eval_transform(images), (images.float() / 255 - mean) / std)
    x = float_images(b=2)
    torch.testing.assert_close(eval_transform(x, mean=(0, 0, 0), std=(1, 1, 1)), x)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(size=0), "size"), (dict(crop_scale=(0.5, 0.2)), "crop_scale"),
     (dict(crop_scale=(0, 1)), "crop_scale"),
     (dict(crop_ratio=(2, 1)), "crop_ratio"), (dict(flip_p=1.5), "flip_p"), (dict(gray_p=-0.1), "gray_p"),
     (dict(jitter=(0.4, 0.4, 0.4, 0.6)), "jitter"), (dict(jitter=(-1, 0, 0, 0)), "jitter"),
     (dict(std=(1, 0, 1)), "std")],
)
def test_bad_parameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimCLRAugment(**kwargs)


def test_bad_images_are_rejected():
    augment = SimCLRAugment()
    with pytest.raises(ValueError, match="shape"):
        augment(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="shape"):
        augment(torch.zeros(2, 1, 32, 32))
    with pytest.raises(TypeError, match="uint8 or floating"):
        augment(torch.zeros(2, 3, 32, 32, dtype=torch.int64))
    with pytest.raises(TypeError, match="Tensor"):
        eval_transform([[0.0]])


@needs_cuda
def test_cuda_views_are_reproducible_and_match_cpu_when_deterministic():
    images = uint8_images(b=8)
    gpu_images = images.cuda().contiguous(memory_format=torch.channels_last)
    augment = SimCLRAugment(normalize=False)
    a, b = augment(gpu_images, gen(4, "cuda")), augment(gpu_images, gen(4, "cuda"))
    assert a.device.type == "cuda" and a.shape == (8, 3, 32, 32)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    ident = SimCLRAugment(**{**OFF, "flip_p": 1.0, "gray_p": 1.0})
    on_gpu = ident(gpu_images, gen(0, "cuda")).cpu()
    torch.testing.assert_close(on_gpu, ident(images, gen(0)), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="generator"):
        augment(gpu_images, gen(0))
    hue = torch.tensor([0.1, -0.2, 0.0, 0.3, -0.4, 0.05, 0.2, -0.05])
    x = images.float() / 255
    on_gpu = _jitter(x.cuda(), hue=hue.cuda()).cpu()
    torch.testing.assert_close(on_gpu, _jitter(x, hue=hue), atol=1e-5, rtol=0)
    assert not math.isnan(eval_transform(gpu_images).sum().item())
