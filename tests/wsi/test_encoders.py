"""Patch encoders: shapes, seeded random init, weights loaded only from a path."""
from __future__ import annotations

import pytest
import torch

from fastmed.errors import ConfigError
from fastmed.wsi.encoders import build_encoder, weights_sha256


def test_resnet50_l3_gives_1024_features():
    enc, dim = build_encoder("resnet50_l3")
    assert dim == 1024 and enc(torch.randn(2, 3, 64, 64)).shape == (2, 1024)
    assert not any(p.requires_grad for p in enc.parameters())


def test_tiny_is_seeded_and_independent_of_global_rng():
    x = torch.rand(3, 3, 32, 32)
    a, dim = build_encoder("tiny", seed=5)
    torch.manual_seed(123)
    b, _ = build_encoder("tiny", seed=5)
    c, _ = build_encoder("tiny", seed=6)
    assert dim == 64
    torch.testing.assert_close(a(x), b(x))
    assert not torch.allclose(a(x), c(x))


def test_weights_from_a_path(tmp_path):
    import torchvision.models as tvm

    src = tvm.resnet18(weights=None, num_classes=7)
    torch.nn.init.constant_(src.conv1.weight, 0.01)
    torch.save(src.state_dict(), tmp_path / "r18.pt")
    enc, dim = build_encoder("resnet18", weights=str(tmp_path / "r18.pt"))
    assert dim == 512
    conv = next(m for m in enc.modules() if isinstance(m, torch.nn.Conv2d))
    assert torch.all(conv.weight == 0.01)
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="match no tensor"):
        build_encoder("tiny", weights=str(tmp_path / "bad.pt"))
    (tmp_path / "junk.pt").write_text("nope")
    with pytest.raises(ConfigError, match="cannot read encoder weights"):
        build_encoder("tiny", weights=str(tmp_path / "junk.pt"))


def test_torchvision_resnet50_weights_fill_the_truncated_encoder(tmp_path):
    import torchvision.models as tvm

    src = tvm.resnet50(weights=None)
    torch.save(src.state_dict(), tmp_path / "r50.pt")
    enc, _ = build_encoder("resnet50_l3", weights=str(tmp_path / "r50.pt"), seed=9)
    own = enc.state_dict()
    torch.testing.assert_close(own["0.weight"], src.conv1.weight)
    torch.testing.assert_close(own["6.5.conv3.weight"], src.layer3[5].conv3.weight)  # last block of layer3


def test_weights_hash_identifies_the_encoder_as_used(tmp_path):
    """Same name and seed: same hash; another seed, a loaded weights file or one changed bit: another hash."""
    a, _ = build_encoder("tiny", seed=5)
    b, _ = build_encoder("tiny", seed=5)
    c, _ = build_encoder("tiny", seed=6)
    assert weights_sha256(a) == weights_sha256(b) and len(weights_sha256(a)) == 64
    assert weights_sha256(c) != weights_sha256(a)
    torch.save(c.state_dict(), tmp_path / "w.pt")
    loaded, _ = build_encoder("tiny", weights=str(tmp_path / "w.pt"), seed=5)
    assert weights_sha256(loaded) == weights_sha256(c)  # the weights decide, not the seed
    with torch.no_grad():
        next(iter(b.parameters())).view(-1)[0] += 1e-7
    assert weights_sha256(b) != weights_sha256(a)


def test_a_polyp_pretrain_checkpoint_becomes_the_wsi_encoder(synth_root, tmp_path):
    """``polyp pretrain --arch resnet18`` → ``wsi features --encoder resnet18 --weights``: every trunk tensor arrives."""
    import torch

    from fastmed.cli import main
    from fastmed.engine.checkpoint import load_checkpoint

    out = tmp_path / "pre"
    assert main(["polyp", "pretrain", "--data", str(synth_root / "polyp"), "--arch", "resnet18", "--epochs", "1",
                 "--batch-size", "8", "--image-size", "32", "--out", str(out), "--progress", "false"]) == 0
    trained = [v for k, v in load_checkpoint(out / "weights" / "best.pt")["model"].items() if not k.startswith("fc.")]
    enc, dim = build_encoder("resnet18", weights=str(out / "weights" / "best.pt"))
    own = list(enc.state_dict().values())
    assert dim == 512 and len(own) == len(trained)
    assert all(torch.equal(a, b) for a, b in zip(own, trained))
    random = list(build_encoder("resnet18")[0].state_dict().values())
    assert not torch.equal(random[0], trained[0])  # the random init differs: the weights file did the work
