import pytest
import torch

from fastmed.engine.checkpoint import load_model, make_checkpoint, save_checkpoint
from fastmed.nets.registry import create_model
from fastmed.nets.unet import UNet, mask_logits


@pytest.mark.parametrize("up", ["bilinear", "transpose"])
def test_unet_shapes_and_no_batchnorm(up):
    m = create_model("unet", in_channels=3, num_classes=2, base_width=8, depth=2, up=up)
    out = m(torch.randn(2, 3, 32, 24))
    assert out.shape == (2, 2, 32, 24)
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules())


def test_unet_extra_heads_return_dict():
    m = UNet(base_width=8, depth=2, extra_heads={"corr": 3})
    out = m(torch.randn(1, 3, 16, 16))
    assert set(out) == {"mask", "corr"}
    assert out["corr"].shape == (1, 3, 16, 16)
    assert mask_logits(out) is out["mask"]


def test_unet_samples_independent():
    m = UNet(base_width=8, depth=2).eval()
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(m(x)[1:2], m(x[1:2]), atol=1e-5, rtol=1e-5)


def test_unet_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        UNet(depth=3, base_width=4)(torch.randn(1, 3, 20, 20))
    with pytest.raises(ValueError, match="up"):
        UNet(up="nearest")
    with pytest.raises(ValueError, match="mask"):
        UNet(extra_heads={"mask": 1})


def test_unet_checkpoint_roundtrip(tmp_path):
    kwargs = {"base_width": 4, "depth": 2, "extra_heads": {"corr": 1}}
    m = create_model("unet", **kwargs)
    path = save_checkpoint(tmp_path / "u.pt", make_checkpoint(m, task="seg", kind="segmenter", arch="unet", arch_kwargs=kwargs))
    m2, ckpt = load_model(path)
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(m2(x)["mask"], m.eval()(x)["mask"])
