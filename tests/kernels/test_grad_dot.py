"""per_sample_grad_dot vs torch.func (vmap of grad), the ground truth; Triton contraction vs reference."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastmed.kernels import per_sample_grad_dot
from fastmed.kernels.grad_dot_cpu import WAYS
from fastmed.kernels.grad_dot_reference import CONV_TRANSPOSE_TYPES


class ZooNet(nn.Module):
    """Strided, dilated, grouped, rectangular and transposed convs (1-d and 2-d), GroupNorm, LayerNorm, Linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.g1 = nn.GroupNorm(4, 8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4)
        self.c3 = nn.Conv2d(8, 6, (3, 2), stride=(1, 2), padding=(1, 0), bias=False)
        self.t1 = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.c1d = nn.Conv1d(4, 4, 3, padding=1, stride=1, dilation=1)
        self.t1d = nn.ConvTranspose1d(4, 4, 2, stride=2)
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = F.relu(self.g1(self.c1(x)), inplace=True)  # in-place after a hooked layer
        h = F.relu(self.c2(h))
        h = torch.tanh(self.c3(h))
        h = self.t1(h)                                  # (M, 4, H', W')
        m, c, hh, ww = h.shape
        r = self.t1d(torch.sin(self.c1d(h.flatten(2))))  # 1-d layers on (M, 4, H'W')
        h = r.reshape(m, c, hh, 2 * ww).permute(0, 2, 3, 1)  # channels last
        return self.fc(self.ln(h)).permute(0, 3, 1, 2)


def mse_per_sample(out, y):
    return ((out - y) ** 2).flatten(1).mean(1)


def ground_truth(model, loss_fn, x, y, direction):
    """Materialized per-sample gradients with torch.func, dotted with the direction."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def one(p, xi, yi):
        return loss_fn(torch.func.functional_call(model, (p, buffers), (xi[None],)), yi[None])[0]

    grads = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(params, x, y)
    return sum((grads[k] * g).flatten(1).sum(1) for k, g in direction.items())


def _problem(model, dtype, m=4, shape=(3, 11, 13)):
    model = model.to(dtype)
    x = torch.randn(m, *shape, dtype=dtype)
    with torch.no_grad():
        y = torch.randn_like(model(x))
    direction = {k: torch.randn_like(v) for k, v in model.named_parameters()}
    return model, x, y, direction


# dtype -> (atol, rtol) against torch.func
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-4, 1e-4)}


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_torch_func_on_layer_zoo(dtype, backend):
    model, x, y, g = _problem(ZooNet(), dtype)
    got = per_sample_grad_dot(model, mse_per_sample, x, y, g, backend=backend)
    want = ground_truth(model, mse_per_sample, x, y, g)
    assert got.shape == (4,) and got.dtype == dtype
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol)
    assert all(p.grad is None for p in model.parameters())


def test_triton_contraction_matches_torch_func_fp32():
    model, x, y, g = _problem(ZooNet(), torch.float32, m=3, shape=(3, 9, 7))
    got = per_sample_grad_dot(model, mse_per_sample, x, y, g, backend="triton")
    want = ground_truth(model, mse_per_sample, x, y, g)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_unet_and_partial_direction():
    from fastmed.nets.unet import UNet

    model, x, y, g = _problem(UNet(base_width=4, depth=2, up="transpose"), torch.float64, m=3, shape=(3, 16, 16))
    some = {k: v for i, (k, v) in enumerate(g.items()) if i % 3 == 0}  # others count as zero
    got = per_sample_grad_dot(model, mse_per_sample, x, y, some)
    torch.testing.assert_close(got, ground_truth(model, mse_per_sample, x, y, some), atol=1e-10, rtol=1e-10)


def test_existing_grad_untouched_and_non_contiguous_input():
    model, x, y, g = _problem(ZooNet(), torch.float64, m=3)
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    got = per_sample_grad_dot(model, mse_per_sample, xt, y, g)
    torch.testing.assert_close(got, ground_truth(model, mse_per_sample, x, y, g))
    assert all(bool((p.grad == 7.0).all()) for p in model.parameters())


def test_batchnorm_train_refused_eval_accepted():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1)).double()
    model, x, y, g = _problem(model, torch.float64, shape=(3, 8, 8))
    with pytest.raises(ValueError, match="not independent"):
        per_sample_grad_dot(model, mse_per_sample, x, y, g)
    model.eval()
    torch.testing.assert_close(per_sample_grad_dot(model, mse_per_sample, x, y, g), ground_truth(model, mse_per_sample, x, y, g))


@pytest.mark.parametrize("track", [False, True])
def test_instance_norm(track):
    """Instance statistics (train mode, no running stats) or running statistics (eval mode)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4, affine=True, track_running_stats=track), nn.Conv2d(4, 1, 1))
    model, x, y, g = _problem(model, torch.float64, shape=(3, 8, 8))
    if track:
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
        model.eval()
    want = ground_truth(model, mse_per_sample, x, y, g)
    torch.testing.assert_close(per_sample_grad_dot(model, mse_per_sample, x, y, g), want)


def test_unknown_layer_falls_back_exactly_with_warning():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU(4), nn.Conv2d(4, 2, 1))
    model, x, y, g = _problem(model, torch.float64, shape=(3, 7, 7))
    with pytest.warns(UserWarning, match="PReLU"):
        got = per_sample_grad_dot(model, mse_per_sample, x, y, g)
    torch.testing.assert_close(got, ground_truth(model, mse_per_sample, x, y, g))


class TiedHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(5, 3)
        self.extra = nn.Linear(3, 3)  # its weight is used outside its own forward

    def forward(self, x):
        return F.linear(torch.tanh(self.enc(x)), self.extra.weight)


def test_parameter_used_outside_forward_uses_slow_exact_path():
    model, x, y, g = _problem(TiedHead(), torch.float64, m=5, shape=(5,))
    g.pop("extra.bias")  # unused by the model; grad is zero anyway
    with pytest.warns(UserWarning, match="extra.weight"):
        got = per_sample_grad_dot(model, mse_per_sample, x, y, g)
    torch.testing.assert_close(got, ground_truth(model, mse_per_sample, x, y, g))


class Folded(nn.Module):
    """Folds a second axis into the batch before a Conv1d: layer rows are not samples."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Conv1d(2, 2, 3)

    def forward(self, x):
        return self.inner(x.flatten(0, 1))


def test_folded_sample_dimension_refused():
    x = torch.randn(3, 4, 2, 8)
    with pytest.raises(ValueError, match="first dimension"):
        per_sample_grad_dot(Folded(), lambda o, t: o.reshape(3, -1).sum(1), x, None, {"inner.weight": torch.randn(2, 2, 3)})


def test_input_validation():
    model, x, y, g = _problem(ZooNet(), torch.float32, m=2)
    with pytest.raises(ValueError, match="not a parameter"):
        per_sample_grad_dot(model, mse_per_sample, x, y, {"c9.weight": g["c1.weight"]})
    with pytest.raises(ValueError, match="shape"):
        per_sample_grad_dot(model, mse_per_sample, x, y, {"c1.weight": g["c1.weight"][:1]})
    with pytest.raises(TypeError, match="dict"):
        per_sample_grad_dot(model, mse_per_sample, x, y, [g["c1.weight"]])
    with pytest.raises(ValueError, match="per-sample losses"):
        per_sample_grad_dot(model, lambda o, t: ((o - t) ** 2).mean(), x, y, g)
    with pytest.raises(ValueError, match="floating"):
        per_sample_grad_dot(model, mse_per_sample, x.long(), y, g)
    with pytest.raises(ValueError, match="backend"):
        per_sample_grad_dot(model, mse_per_sample, x, y, g, backend="cuda")


class WideZoo(nn.Module):
    """Conv layers with few and many channels (1-d, 2-d, 3-d, transposed, grouped), GroupNorm."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)                          # few channels: per-sample weight grads
        self.c2 = nn.Conv2d(4, 20, 3, stride=2, padding=1, dilation=1)   # 4 x 20 = 80: per-sample
        self.g2 = nn.GroupNorm(5, 20)
        self.c3 = nn.Conv2d(20, 24, 3, padding=2, dilation=2, groups=2)  # 10 x 12 per group
        self.t3 = nn.ConvTranspose2d(24, 18, 3, stride=2, padding=1, output_padding=1)  # 24 x 18 = 432: forward conv + dot
        self.c3d = nn.Conv3d(2, 3, (1, 3, 3), padding=(0, 1, 1))
        self.c1d = nn.Conv1d(18, 17, 2, stride=2)                        # 306: forward conv + dot
        self.t1d = nn.ConvTranspose1d(17, 4, 3, stride=3, groups=1)

    def forward(self, x):
        h = torch.tanh(self.c1(x))
        h = F.relu(self.g2(self.c2(h)), inplace=True)
        h = self.t3(torch.sin(self.c3(h)))              # (M, 18, H, W)
        m, c, hh, ww = h.shape
        h = self.c3d(h.reshape(m, 2, 9, hh, ww)).reshape(m, 27, hh, ww)[:, :18]
        return self.t1d(torch.tanh(self.c1d(h.flatten(2))))


@pytest.mark.parametrize("way", [*WAYS, "measured"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_rules_each_way(dtype, way, monkeypatch):
    """Conv, transposed, grouped, 1/2/3-d layers, each contraction way: cpu rules == torch.func == reference."""
    from fastmed.kernels import grad_dot_cpu

    if way != "measured":  # each way where it can run (unfold: any non-transposed conv, pointwise: 1x1 or kernel =
        # stride transposed, channels-last: 2-d layers), "forward" elsewhere
        runs = {"unfold": lambda m: not isinstance(m, CONV_TRANSPOSE_TYPES), "pointwise": grad_dot_cpu.is_pointwise,
                "forward, channels-last": lambda m: len(m.kernel_size) == 2}
        monkeypatch.setattr(grad_dot_cpu, "measured_way_dot", lambda module, *args: grad_dot_cpu.way_dot(
            module, *args, way if runs.get(way, lambda m: True)(module) else "forward"))
    model, x, y, g = _problem(WideZoo(), dtype, m=3, shape=(3, 8, 10))
    got = per_sample_grad_dot(model, mse_per_sample, x, y, g, backend="cpu")
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(got, ground_truth(model, mse_per_sample, x, y, g), atol=atol, rtol=rtol)
    torch.testing.assert_close(got, per_sample_grad_dot(model, mse_per_sample, x, y, g, backend="torch"), atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_group_norm_rule_with_and_without_saved_statistics(dtype):
    """GroupNorm contribution from the forward's saved mean/rstd, or recomputed (node None), equals the reference."""
    from fastmed.kernels.grad_dot_cpu import layer_dot_cpu
    from fastmed.kernels.grad_dot_reference import layer_dot_reference

    torch.manual_seed(0)
    gn = nn.GroupNorm(3, 6).to(dtype)
    a = torch.randn(4, 6, 5, 7, dtype=dtype) * 3 + 1
    out = gn(a)
    delta = torch.randn_like(out)
    g = {"weight": torch.randn(6, dtype=dtype), "bias": torch.randn(6, dtype=dtype)}
    want = layer_dot_reference(gn, a, delta, g)
    atol, rtol = TOL[dtype]
    assert type(out.grad_fn).__name__ == "NativeGroupNormBackward0"
    torch.testing.assert_close(layer_dot_cpu(gn, a, delta, g, out.grad_fn), want, atol=atol, rtol=rtol)
    torch.testing.assert_close(layer_dot_cpu(gn, a, delta, g, None), want, atol=atol, rtol=rtol)


class NoInputGradient(torch.autograd.Function):
    """Identity whose backward fails: any gradient sent back to the input is an error."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("the backward reached the model input")


class GuardedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3)
        self.c2 = nn.Conv2d(4, 2, 1)
        self.guard = True

    def forward(self, x):
        return self.c2(torch.tanh(self.c1(NoInputGradient.apply(x) if self.guard else x)))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_backward_stops_at_the_first_layer(backend):
    """No gradient of the input (or of the first layer's input) is formed; a frozen layer still works."""
    model, x, y, g = _problem(GuardedNet().double(), torch.float64, m=3, shape=(3, 7, 7))
    got = per_sample_grad_dot(model, mse_per_sample, x, y, g, backend=backend)
    model.guard = False  # torch.func cannot trace the guard
    torch.testing.assert_close(got, ground_truth(model, mse_per_sample, x, y, g))
    model.guard = True
    model.c1.requires_grad_(False)  # a frozen hooked layer: the backward runs to the input again
    with pytest.raises(AssertionError, match="reached the model input"):
        per_sample_grad_dot(model, mse_per_sample, x, y, g, backend=backend)


def test_partial_direction_with_trainable_layers_outside_it():
    """Layers left out of the direction but trainable sit on the path: the backward must not stop before them."""
    model, x, y, g = _problem(ZooNet(), torch.float64, m=3)
    some = {k: v for k, v in g.items() if k.startswith(("t1.", "fc."))}  # only late layers; earlier ones trainable
    got = per_sample_grad_dot(model, mse_per_sample, x, y, some, backend="cpu")
    torch.testing.assert_close(got, ground_truth(model, mse_per_sample, x, y, some), atol=1e-10, rtol=1e-10)


def test_measured_way_is_timed_once_and_kept(monkeypatch):
    """The first call for a layer configuration and shapes runs every way; later calls run the kept one only."""
    from fastmed.kernels import grad_dot_cpu

    calls = []
    real = grad_dot_cpu.way_dot
    monkeypatch.setattr(grad_dot_cpu, "way_dot", lambda *args: calls.append(args[-1]) or real(*args))
    monkeypatch.setattr(grad_dot_cpu, "_MEASURED", {})
    conv = nn.Conv2d(2, 5, 3, padding=1).double()
    a, delta = torch.randn(2, 2, 6, 6, dtype=torch.float64), torch.randn(2, 5, 6, 6, dtype=torch.float64)
    gw, gb = torch.randn_like(conv.weight), torch.randn_like(conv.bias)
    first = grad_dot_cpu.measured_way_dot(conv, a, delta, gw, gb)
    # 18 patch entries per 5 outputs: unfold applies; a 3x3 kernel is not pointwise
    assert grad_dot_cpu.ways_for(conv) == tuple(w for w in grad_dot_cpu.WAYS if w != "pointwise")
    assert grad_dot_cpu.ways_for(nn.Conv2d(8, 2, 3)) == tuple(w for w in grad_dot_cpu.WAYS if w not in ("unfold", "pointwise"))
    assert "forward, channels-last" not in grad_dot_cpu.ways_for(nn.Conv1d(2, 5, 3)) + grad_dot_cpu.ways_for(nn.Conv3d(2, 5, 3))
    ways = grad_dot_cpu.ways_for(conv)
    assert sorted(calls) == sorted(ways * grad_dot_cpu.MEASURE_ROUNDS)
    kept = list(grad_dot_cpu._MEASURED.values())
    assert len(kept) == 1 and kept[0] in ways
    second = grad_dot_cpu.measured_way_dot(conv, a, delta, gw, gb)
    assert calls[len(ways) * grad_dot_cpu.MEASURE_ROUNDS:] == kept
    want = (delta * conv._conv_forward(a, gw, gb)).flatten(1).sum(1)
    torch.testing.assert_close(first, want)
    torch.testing.assert_close(second, want)


@pytest.mark.parametrize("way", [w for w in WAYS if w != "pointwise"])
def test_each_way_with_and_without_bias_known_values(way):
    """Every way gives <delta_m, conv(a_m; G_W)> + <sum delta_m, G_b> (G_b fused into f in the forward ways) and
    the weight term alone without a bias."""
    from fastmed.kernels import grad_dot_cpu

    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, stride=2, padding=1).double()
    a, delta = torch.randn(3, 2, 7, 7, dtype=torch.float64), torch.randn(3, 4, 4, 4, dtype=torch.float64)
    gw, gb = torch.randn_like(conv.weight), torch.randn_like(conv.bias)
    weight_term = (delta * conv._conv_forward(a, gw, None)).flatten(1).sum(1)
    bias_term = delta.sum((2, 3)) @ gb
    torch.testing.assert_close(grad_dot_cpu.way_dot(conv, a, delta, gw, gb, way), weight_term + bias_term)
    torch.testing.assert_close(grad_dot_cpu.way_dot(conv, a, delta, gw, None, way), weight_term)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_activations_are_freed_after_the_call(backend):
    """Nothing of the call outlives it: the hooks' records of each layer's inputs form a cycle with the
    autograd graph (output hook -> record -> gradient edge -> node) that Python's GC cannot see, so an
    uncleared record kept every activation of every call alive (seg-reweight runs grew by ~100 MB an epoch)."""
    model, x, y, direction = _problem(ZooNet(), torch.float32)
    seen = []
    model.c2.register_forward_hook(lambda mod, args, out: seen.append(weakref.ref(args[0])))
    per_sample_grad_dot(model, mse_per_sample, x, y, direction, backend=backend)
    gc.collect()
    assert len(seen) == 1 and seen[0]() is None


class ChainNet(nn.Module):
    """Three convs; the last one's input is saved by nothing but that conv's own autograd node."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.c3(self.c2(torch.sin(self.c1(x))) * 1.5)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_layer_inputs_are_freed_during_the_backward(backend):
    """A layer's input may be freed once its contraction is done and its node has run: the records used to keep
    every layer's input alive to the end of the backward (more memory, and fresh pages for the rest of it)."""
    model, x, y, g = _problem(ChainNet(), torch.float32, m=3, shape=(3, 9, 9))
    last_input, alive_at_first_layer = [], []
    model.c3.register_forward_hook(lambda mod, args, out: last_input.append(weakref.ref(args[0])))

    def watch_first_layer(mod, args, out):  # returns None: the output stays as it is
        out.register_hook(lambda grad: alive_at_first_layer.append(last_input[0]() is not None))

    model.c1.register_forward_hook(watch_first_layer)
    got = per_sample_grad_dot(model, mse_per_sample, x, y, g, backend=backend)
    assert alive_at_first_layer == [False]
    torch.testing.assert_close(got, ground_truth(model, mse_per_sample, x, y, g), atol=1e-4, rtol=1e-4)


POINTWISE_LAYERS = [
    nn.Conv2d(6, 4, 1, groups=2), nn.Conv1d(3, 5, 1), nn.Conv3d(4, 4, 1, groups=4, bias=False),
    nn.ConvTranspose2d(6, 4, 2, stride=2, groups=2), nn.ConvTranspose2d(3, 5, (2, 3), stride=(2, 3)),
    nn.ConvTranspose1d(3, 2, 3, stride=3, output_padding=1), nn.ConvTranspose3d(2, 4, 2, stride=2, bias=False),
]


@pytest.mark.parametrize("layer", POINTWISE_LAYERS, ids=lambda layer: repr(layer))
def test_pointwise_way_known_values(layer):
    """1x1 convolutions and transposed ones with kernel = stride (groups, output padding, 1-3 d): the pointwise
    way equals <delta_m, conv(a_m; G_W) + G_b>, computed here by the layer's own forward."""
    from fastmed.kernels import grad_dot_cpu

    torch.manual_seed(0)
    layer = layer.double()
    assert "pointwise" in grad_dot_cpu.ways_for(layer)
    a = torch.randn(3, layer.in_channels, *[5] * len(layer.kernel_size), dtype=torch.float64)
    delta = torch.randn_like(layer(a))
    gw = torch.randn_like(layer.weight)
    gb = None if layer.bias is None else torch.randn_like(layer.bias)
    f = torch.func.functional_call(layer, {"weight": gw, **({"bias": gb} if gb is not None else {})}, (a,))
    want = (delta * f).flatten(1).sum(1)
    torch.testing.assert_close(grad_dot_cpu.way_dot(layer, a, delta, gw, gb, "pointwise"), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer", [nn.Conv2d(3, 3, 1, stride=2), nn.Conv2d(3, 3, 1, padding=1), nn.Conv2d(3, 3, 3),
                                   nn.ConvTranspose2d(3, 3, 2, stride=1), nn.ConvTranspose2d(3, 3, 2, stride=2, dilation=2),
                                   nn.ConvTranspose2d(3, 3, 2, stride=2, padding=1)], ids=lambda layer: repr(layer))
def test_pointwise_way_only_where_positions_map_one_to_one(layer):
    from fastmed.kernels import grad_dot_cpu

    assert "pointwise" not in grad_dot_cpu.ways_for(layer)
