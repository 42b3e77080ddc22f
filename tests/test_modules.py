"""Drop-in modules and convert(): torchvision's names and init, state dicts both ways, shared parameters."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

import squeezeae_ext as sx
from squeezeae_ext.squeezenet import TorchvisionFire, squeezenet1_0, squeezenet1_1


def test_fire_state_dict_round_trip_and_outputs(device):
    ours, theirs = sx.Fire(32, 8, 16, 24).to(device), TorchvisionFire(32, 8, 16, 24).to(device)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 32, 11, 9, device=device, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    out, ref = ours(x), theirs(x2)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-4)
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4, msg=name)
    theirs.load_state_dict(sx.Fire(32, 8, 16, 24).state_dict())  # and back


def test_fire_default_init_matches_torchvision():
    torch.manual_seed(1)
    ours = sx.Fire(16, 4, 8, 8)
    torch.manual_seed(1)
    theirs = TorchvisionFire(16, 4, 8, 8)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(p, q)
    assert ours.inplanes == 16


@pytest.mark.parametrize("build", [squeezenet1_0, squeezenet1_1])
def test_convert_squeezenet(build):
    model = build(num_classes=10).eval()
    converted = sx.convert(model)
    fires = [m for m in converted.modules() if isinstance(m, sx.Fire)]
    assert len(fires) == 8
    assert not any(isinstance(m, sx.Fire) for m in model.modules()), "inplace=False left the original alone"
    assert list(converted.state_dict()) == list(model.state_dict())
    assert all(p is q for p, q in zip(converted.parameters(), model.parameters())), "parameters are shared"
    x = torch.randn(2, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), rtol=1e-4, atol=1e-5)


def test_convert_inplace_and_unpool():
    model = nn.Sequential(TorchvisionFire(4, 2, 3, 3), nn.ReLU())
    same = sx.convert(model, inplace=True)
    assert same is model and isinstance(model[0], sx.Fire)
    unpool = sx.convert(nn.MaxUnpool2d(3, 2, 1))
    assert isinstance(unpool, sx.MaxUnpool2d) and unpool.stride == (2, 2) and unpool.padding == (1, 1)
    fire = sx.convert(TorchvisionFire(4, 2, 3, 3))
    assert isinstance(fire, sx.Fire)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        sx.convert("squeezenet")


def test_convert_leaves_lookalikes_alone():
    odd = TorchvisionFire(4, 2, 3, 3)
    odd.expand3x3 = nn.Conv2d(2, 3, 3, padding=2, dilation=2)
    assert not isinstance(sx.convert(odd), sx.Fire)


def test_converted_model_trains_like_the_original():
    model = squeezenet1_1(num_classes=4)
    converted = sx.convert(copy.deepcopy(model))
    x = torch.randn(2, 3, 64, 64)
    for m in (model, converted):
        m.train()
        torch.manual_seed(0)  # same dropout mask
        m(x).sum().backward()
    for (name, p), q in zip(model.named_parameters(), converted.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-4, msg=name)


def test_unpool_fire_module_loads_fire_state(device):
    fire = sx.Fire(6, 3, 4, 4)
    unpool_fire = sx.UnpoolFire(6, 3, 4, 4, kernel_size=2)
    unpool_fire.load_state_dict(fire.state_dict())
    assert "kernel_size=2" in repr(unpool_fire)


def _double(module, name):
    """A parametrization: the layer's `name` is twice the stored tensor."""

    class Double(nn.Module):
        def forward(self, value):
            return 2 * value

    parametrize.register_parametrization(module, name, Double())


@pytest.mark.parametrize(
    "rewrite",
    [
        lambda fire: _double(fire.expand3x3, "weight"),
        lambda fire: _double(fire.squeeze, "bias"),
        lambda fire: prune.l1_unstructured(fire.expand1x1, "weight", amount=0.5),
        lambda fire: torch.nn.utils.weight_norm(fire.squeeze),
        lambda fire: setattr(fire, "expand1x1", nn.Conv2d(4, 5, 1, bias=False)),
    ],
    ids=["parametrized-weight", "parametrized-bias", "pruned", "weight_norm", "replaced-without-bias"],
)
@pytest.mark.parametrize("unpool", [False, True])
@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")  # still in use
def test_rewritten_children_are_honoured(rewrite, unpool):
    """Fire and UnpoolFire read their children's parameters through a fast path; parametrizations, pruning,
    weight_norm and replaced children must still be what the fused op computes with."""
    torch.manual_seed(0)
    fire = sx.UnpoolFire(6, 4, 5, 7, kernel_size=2) if unpool else sx.Fire(6, 4, 5, 7)
    with torch.no_grad():  # make every bias matter
        for conv in (fire.squeeze, fire.expand1x1, fire.expand3x3):
            conv.bias.uniform_(0.1, 0.5)
    rewrite(fire)
    reference = TorchvisionFire(6, 4, 5, 7)
    reference.squeeze, reference.expand1x1, reference.expand3x3 = fire.squeeze, fire.expand1x1, fire.expand3x3
    x = torch.randn(2, 6, 8, 10, requires_grad=True)
    if unpool:
        pooled, indices = nn.functional.max_pool2d(x.detach(), 2, return_indices=True)
        pooled.requires_grad_()
        out = fire(pooled, indices, (8, 10))
        ref = reference(nn.functional.max_unpool2d(pooled, indices, 2, output_size=(8, 10)))
        leaf = pooled
    else:
        out, ref, leaf = fire(x), reference(x), x
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out.sum(), [leaf, *fire.parameters()])
    ref_grads = torch.autograd.grad(ref.sum(), [leaf, *fire.parameters()])
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
