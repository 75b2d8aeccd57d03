"""Per-sample gradient dot products from one forward and one backward (PyTorch reference).

For M samples with losses ``l_m`` and a fixed direction ``G`` (one tensor per
parameter) we want ``d_m = <grad_theta l_m, G>`` without forming the M
per-sample gradients. Each layer ``z = f(a; W) + b`` that is linear in its
weight gives, with ``delta_m = dl_m / dz_m`` (the output gradient of the
summed loss; samples are independent)::

    <grad_W l_m, G_W> + <grad_b l_m, G_b> = <delta_m, f(a_m; G_W)> + <sum_positions delta_m, G_b>

so one extra forward-like operation per layer on the saved input ``a`` and
output gradient ``delta`` suffices: ``f = conv`` with the layer's stride,
padding, dilation and groups (a transposed convolution, a linear layer
likewise). Norm layers ``z = xhat * w + b`` form the small per-sample
gradients ``(M, C)`` of their affine parameters. A layer type without a rule
contributes ``<delta_m, J_W f(a_m) G_W>`` through ``torch.func.jvp`` (exact,
slower; a warning names it), and parameters used outside their module's
``forward`` fall back to one backward per sample (exact, slowest).

This file is the specification and the CPU path; ``grad_dot_triton`` fuses the
convolution / linear contraction with the per-sample sum.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# a contraction: (module, a, delta, direction of the module's own params, autograd node of the
# layer's output, whose saved tensors a rule may read) -> (M,)
LayerDot = Callable[[nn.Module, torch.Tensor, torch.Tensor, dict[str, torch.Tensor], object], torch.Tensor]

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORM_TYPES = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
              nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
KNOWN_TYPES = (nn.Linear, *CONV_TYPES, *CONV_TRANSPOSE_TYPES, *NORM_TYPES)


def _per_sample_sum(t: torch.Tensor) -> torch.Tensor:
    """``(M, ...)`` -> ``(M,)``: sum over every dimension but the first."""
    return t.reshape(t.shape[0], -1).sum(1)


def channel_sum(delta: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """``(M, C)``: ``delta`` summed over every dimension but the sample and ``channel_dim``."""
    channel_dim %= delta.dim()
    dims = [d for d in range(1, delta.dim()) if d != channel_dim]
    return delta.sum(dims) if dims else delta


def _bias_dot(delta: torch.Tensor, g_bias: torch.Tensor | None, channel_dim: int) -> torch.Tensor | None:
    """``<sum over positions of delta_m, G_b>``; ``delta`` has channels on ``channel_dim``."""
    if g_bias is None:
        return None
    return channel_sum(delta, channel_dim) @ g_bias.to(delta.dtype)


def transposed_output_padding(module: nn.Module, a: torch.Tensor, out_shape: torch.Size) -> list[int]:
    """The ``output_padding`` that reproduces ``out_shape`` (spatial) from input ``a``."""
    n = len(module.kernel_size)
    pads = []
    for i in range(n):
        size_in = a.shape[-n + i]
        default = (size_in - 1) * module.stride[i] - 2 * module.padding[i] + module.dilation[i] * (module.kernel_size[i] - 1) + 1
        pads.append(int(out_shape[-n + i]) - default)
    return pads


def directional_output(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g_weight: torch.Tensor,
                       g_bias: torch.Tensor | None = None) -> torch.Tensor:
    """``f(a; G_W) + G_b``: the layer applied to ``a`` with weight ``G_W`` and bias ``G_b`` (none by default;
    conv, conv-T, linear)."""
    if isinstance(module, nn.Linear):
        return F.linear(a, g_weight, g_bias)
    if isinstance(module, CONV_TYPES):
        return module._conv_forward(a, g_weight, g_bias)
    if isinstance(module, CONV_TRANSPOSE_TYPES):
        conv_t = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[len(module.kernel_size)]
        out_pad = transposed_output_padding(module, a, delta.shape)
        return conv_t(a, g_weight, g_bias, module.stride, module.padding, out_pad, module.groups, module.dilation)
    raise TypeError(f"no directional rule for {type(module).__name__}")


def normalized_input(module: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """``xhat``: the norm layer's output before its affine ``* w + b``."""
    if isinstance(module, nn.GroupNorm):
        return F.group_norm(a, module.num_groups, None, None, module.eps)
    if isinstance(module, nn.LayerNorm):
        return F.layer_norm(a, module.normalized_shape, None, None, module.eps)
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        use_batch_stats = module.training or not module.track_running_stats  # per sample either way
        return F.instance_norm(a, module.running_mean, module.running_var, None, None, use_batch_stats, 0.0, module.eps)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):  # eval mode with running stats (checked earlier)
        return F.batch_norm(a, module.running_mean, module.running_var, None, None, False, 0.0, module.eps)
    raise TypeError(f"no normalization rule for {type(module).__name__}")


def norm_affine_dot(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sample affine gradients of a norm layer (small: ``(M, C)``) dotted with ``G``."""
    xhat = normalized_input(module, a)
    out = delta.new_zeros(delta.shape[0])
    if isinstance(module, nn.LayerNorm):  # affine over the trailing normalized_shape
        k = len(module.normalized_shape)
        lead = tuple(range(1, delta.dim() - k))
        if "weight" in g:
            out = out + ((delta * xhat).sum(lead).reshape(delta.shape[0], -1) @ g["weight"].reshape(-1).to(delta.dtype))
        if "bias" in g:
            out = out + (delta.sum(lead).reshape(delta.shape[0], -1) @ g["bias"].reshape(-1).to(delta.dtype))
        return out
    m, c = delta.shape[:2]
    if "weight" in g:
        per_sample_w = torch.linalg.vecdot(delta.reshape(m, c, -1), xhat.reshape(m, c, -1))  # (M, C)
        out = out + per_sample_w @ g["weight"].to(delta.dtype)
    if "bias" in g:
        out = out + _bias_dot(delta, g["bias"], 1)
    return out


def linear_like_dot_reference(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g: dict[str, torch.Tensor]) -> torch.Tensor:
    """``<delta_m, f(a_m; G_W)> + <sum delta_m, G_b>`` for conv, transposed conv and linear layers."""
    out = delta.new_zeros(delta.shape[0])
    if "weight" in g:
        out = out + _per_sample_sum(delta * directional_output(module, a, delta, g["weight"].to(a.dtype)))
    bias = _bias_dot(delta, g.get("bias"), -1 if isinstance(module, nn.Linear) else 1)
    return out if bias is None else out + bias


def layer_dot_reference(module: nn.Module, a: torch.Tensor, delta: torch.Tensor, g: dict[str, torch.Tensor], node: object = None) -> torch.Tensor:
    """The per-sample contribution ``(M,)`` of one call of a known layer type (``node`` is not needed here)."""
    if isinstance(module, NORM_TYPES):
        return norm_affine_dot(module, a, delta, g)
    return linear_like_dot_reference(module, a, delta, g)


def jvp_layer_dot(module: nn.Module, args: tuple, kwargs: dict, delta: torch.Tensor, g: dict[str, torch.Tensor]) -> torch.Tensor:
    """Exact fallback for any layer: ``<delta_m, J_W f(args_m) G_W>`` with ``torch.func.jvp``."""
    names = list(g)
    params = tuple(getattr(module, n).detach() for n in names)
    tangents = tuple(g[n].to(p.dtype) for n, p in zip(names, params))

    def f(*p):
        return torch.func.functional_call(module, dict(zip(names, p)), args, kwargs, strict=False)

    _, dz = torch.func.jvp(f, params, tangents)
    if not isinstance(dz, torch.Tensor):
        raise TypeError(f"fallback path needs a layer returning one tensor; {type(module).__name__} returned {type(dz).__name__}")
    return _per_sample_sum(delta * dz)


def refuse_coupled_samples(model: nn.Module) -> None:
    """Raise ``ValueError`` for layers that mix samples (BatchNorm on batch statistics)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats):
            raise ValueError(
                f"model layer {name or type(model).__name__!r} ({type(m).__name__}) normalizes with batch statistics, "
                "so samples are not independent and per-sample gradients are undefined; use GroupNorm/LayerNorm "
                "or put BatchNorm layers in eval mode"
            )


@dataclass
class _Call:
    """One call of a hooked layer: its inputs and, after the backward, its contribution or output gradient."""

    module_name: str
    args: tuple
    kwargs: dict
    versions: list[int]
    output_edge: torch.autograd.graph.GradientEdge | None  # where the output gradient arrives (None once released)
    contribution: torch.Tensor | None = None  # (M,), known layer types (computed during the backward)
    delta: torch.Tensor | None = None         # output gradient, kept only for the fallback path


@dataclass
class _Capture:
    """Records every call of the hooked layers; known layers are contracted as soon as their
    output gradient arrives, so no layer's output gradient outlives its step of the backward."""

    modules: dict[str, nn.Module]
    owners: dict[str, dict[str, torch.Tensor]]
    layer_dot: LayerDot
    n_samples: int
    calls: list[_Call] = field(default_factory=list)
    active: bool = True

    def forward_hook(self, name: str):
        def hook(module, args, kwargs, output):
            if not self.active:
                return None
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                raise TypeError(f"layer {name!r} must return one tensor that depends on the inputs (got {type(output).__name__})")
            versions = [t._version for t in args if isinstance(t, torch.Tensor)]
            call = _Call(name, args, kwargs, versions, torch.autograd.graph.get_gradient_edge(output))
            self.calls.append(call)
            output.register_hook(lambda grad: self.on_output_grad(call, grad))
            return None

        return hook

    def release(self) -> None:
        """Drop every record. Each output hook holds its record, and the record the output's autograd
        node (``output_edge``): a cycle through C++ that Python's GC cannot break, which would keep
        every recorded activation alive after the call."""
        self.active = False
        for call in self.calls:
            call.args, call.kwargs, call.output_edge, call.contribution, call.delta = (), {}, None, None, None
        self.calls.clear()

    def on_output_grad(self, call: _Call, delta: torch.Tensor) -> None:
        now = [t._version for t in call.args if isinstance(t, torch.Tensor)]
        if now != call.versions:
            raise RuntimeError(f"the input of layer {call.module_name!r} was modified in place after the layer used it")
        if delta.shape[0] != self.n_samples:
            raise ValueError(
                f"layer {call.module_name!r} sees a batch of {delta.shape[0]} rows, not the {self.n_samples} samples; "
                "per-sample rules need every layer's first dimension to be the sample"
            )
        module = self.modules[call.module_name]
        if type(module) in KNOWN_TYPES:
            call.contribution = self.layer_dot(module, call.args[0].detach(), delta, self.owners[call.module_name], call.output_edge.node)
            # done with this layer: let autograd free its input as soon as its own node has run (keeping every
            # layer's input to the end of the backward kept the heap from reusing them: more fresh pages to fault in)
            call.args, call.kwargs = (), {}
        else:
            call.delta = delta


def backward_stops(calls: list[_Call]) -> list[torch.autograd.graph.GradientEdge]:
    """Where the backward may stop so that every hooked output still receives its gradient.

    With the input not requiring grad, a call whose tensor arguments need no gradient is a
    first layer: its output is a stop (the gradient of its input, a wasted backward through
    it, is never formed). Behind any other call's arguments the graph is walked up to the
    hooked outputs it passes through; a leaf met on the way (a trainable tensor used outside
    a hooked layer) becomes a stop too, so no path is cut.
    """
    hooked = {c.output_edge.node for c in calls}
    stops, seen = [], set()
    for call in calls:
        needing = [t for t in (*call.args, *call.kwargs.values()) if isinstance(t, torch.Tensor) and t.requires_grad]
        if not needing:
            stops.append(call.output_edge)
        todo = [torch.autograd.graph.get_gradient_edge(t).node for t in needing]
        while todo:
            node = todo.pop()
            if node is None or node in seen or node in hooked:
                continue
            seen.add(node)
            if hasattr(node, "variable"):  # AccumulateGrad: a trainable leaf
                stops.append(torch.autograd.graph.GradientEdge(node, 0))
            else:
                todo.extend(nxt for nxt, _ in node.next_functions)
    return stops


def _split_direction(direction: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Group ``direction`` by owning module: ``{module name: {param name: G}}``."""
    owners: dict[str, dict[str, torch.Tensor]] = {}
    for full, g in direction.items():
        mod, _, p = full.rpartition(".")
        owners.setdefault(mod, {})[p] = g
    return owners


def per_sample_grad_dot_reference(
    model: nn.Module,
    loss_fn: Callable[[object, object], torch.Tensor],
    inputs: torch.Tensor,
    targets: object,
    direction: dict[str, torch.Tensor],
    layer_dot: LayerDot = layer_dot_reference,
) -> torch.Tensor:
    """``(M,)`` with ``d_m = sum_p <d l_m / d theta_p, direction[p]>`` (inputs assumed validated).

    Args:
        model: the network; every layer must treat samples independently.
        loss_fn: ``loss_fn(model(inputs), targets) -> (M,)`` per-sample losses.
        inputs: ``(M, ...)`` floating-point batch.
        targets: whatever ``loss_fn`` takes.
        direction: parameter name -> tensor shaped like that parameter; absent
            parameters count as zero.
        layer_dot: the contraction for known layer types (this module's torch
            version or the fused Triton one).

    Returns ``(M,)`` in the dtype of the losses. No ``.grad`` is written.
    """
    refuse_coupled_samples(model)
    modules = dict(model.named_modules())
    owners = _split_direction(direction)
    capture = _Capture(modules, owners, layer_dot, inputs.shape[0])
    handles = []
    fallback = []
    for mod_name in owners:
        module = modules[mod_name]
        if type(module) not in KNOWN_TYPES:
            fallback.append(mod_name)
        handles.append(module.register_forward_hook(capture.forward_hook(mod_name), with_kwargs=True))
    if fallback:
        warnings.warn(
            "per_sample_grad_dot: no fast rule for layer(s) "
            + ", ".join(f"{n} ({type(modules[n]).__name__})" for n in fallback)
            + "; using the exact torch.func.jvp path for them (slower)",
            stacklevel=3,
        )
    # With every hooked parameter trainable, the backward can stop at the first hooked layers'
    # outputs (see backward_stops) instead of running on to the input.
    to_input = not all(getattr(modules[m], p).requires_grad for m, ps in owners.items() if m in modules for p in ps)
    x = inputs.detach().requires_grad_(to_input)
    try:
        with torch.enable_grad():
            losses = loss_fn(model(x), targets)
            if not isinstance(losses, torch.Tensor) or losses.shape != (inputs.shape[0],):
                shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
                raise ValueError(f"loss_fn must return per-sample losses of shape ({inputs.shape[0]},), got {shape}")
            called = {c.module_name for c in capture.calls}
            unhooked = {n: g for n, g in owners.items() if n not in called}
            outside = _used_params(modules, unhooked, losses)
            stops = [x] if to_input else backward_stops(capture.calls)
            if stops:
                torch.autograd.grad(losses.sum(), stops, retain_graph=bool(outside), allow_unused=True)
        for h in handles:
            h.remove()
        handles.clear()
        capture.active = False
        total = losses.detach().new_zeros(inputs.shape[0])
        for call in capture.calls:
            if call.contribution is not None:
                total = total + call.contribution.to(total.dtype)
            elif call.delta is not None:  # a layer without a fast rule
                args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in call.args)
                module, g = modules[call.module_name], owners[call.module_name]
                total = total + jvp_layer_dot(module, args, call.kwargs, call.delta, g).to(total.dtype)
        if outside:
            total = total + _per_sample_loop(outside, direction, losses)
        return total
    finally:
        for h in handles:
            h.remove()
        capture.release()


def _used_params(modules: dict[str, nn.Module], unhooked: dict[str, dict[str, torch.Tensor]], losses: torch.Tensor) -> list[tuple[str, nn.Parameter]]:
    """Parameters that reach the loss although their module's forward never ran (name, parameter)."""
    live = [
        (f"{m}.{p}" if m else p, getattr(modules[m], p))
        for m, ps in unhooked.items() for p in ps
        if getattr(modules[m], p).requires_grad
    ]
    if not live:
        return []
    grads = torch.autograd.grad(losses.sum(), [p for _, p in live], retain_graph=True, allow_unused=True)
    used = [pair for pair, gr in zip(live, grads) if gr is not None]
    if used:
        warnings.warn(
            f"per_sample_grad_dot: parameter(s) {', '.join(n for n, _ in used)} are used outside their module's "
            "forward; computing their part with one backward per sample (exact, slow)",
            stacklevel=4,
        )
    return used


def _per_sample_loop(used: list[tuple[str, nn.Parameter]], direction: dict[str, torch.Tensor], losses: torch.Tensor) -> torch.Tensor:
    """Exact slow path: one backward per sample for parameters without a hook."""
    params = [p for _, p in used]
    out = []
    for m in range(losses.shape[0]):
        grads = torch.autograd.grad(losses[m], params, retain_graph=m + 1 < losses.shape[0], allow_unused=True)
        out.append(sum((gr * direction[n].to(gr.dtype)).sum() for (n, _), gr in zip(used, grads) if gr is not None))
    return torch.stack([torch.as_tensor(v, dtype=losses.dtype) for v in out]).detach()
