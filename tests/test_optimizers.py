"""Tests for the optimizer registry in `autotimm.optim.optimizers`."""

from __future__ import annotations

import math

import pytest
import timm.optim
import torch
from torch import nn

from autotimm.optim import check_optimizer_kwargs, create_optimizer, list_optimizers, resolve_optimizer

LISTED = list_optimizers()
ALL_NAMES = LISTED["torch"] + LISTED["timm"]
WEIGHT_DECAY = 1e-4

# torch.optim optimizers left out of the "torch" group; the tests below show why.
EXCLUDED_TORCH = {"LBFGS", "SparseAdam", "Muon", "Rprop"}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Use one intra-op thread: the tensors are tiny, and on a busy CPU more threads stall for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 1))
    model[0].bias.requires_grad_(False)  # a frozen parameter
    return model


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=generator)
    y = x @ torch.randn(8, 1, generator=generator) + 0.1 * torch.randn(64, 1, generator=generator)
    return x, y


@pytest.mark.filterwarnings("ignore:It is highly recommended to have 'opt_einsum'")  # timm's Kron, optional
@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_listed_optimizer_trains(name: str) -> None:
    model = _model()
    x, y = _data()
    frozen = model[0].bias
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    # One lr for all: 1e-2 lowers the loss within 20 steps for every listed optimizer.
    optimizer = create_optimizer(name, model, lr=1e-2, weight_decay=WEIGHT_DECAY)

    optimized = [p for group in optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in optimized} == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(p is not frozen for p in optimized)
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert group["weight_decay"] == (0.0 if p.ndim <= 1 else WEIGHT_DECAY)

    losses = []
    # timm's Kron compiles its kernels with torch.compile (~25 s cold on 2 CPU cores);
    # run them eagerly here: this test checks the optimizer, not the compiler.
    with torch.compiler.set_stance("force_eager"):
        for _ in range(20):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())

    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[n]), f"{n} did not change"
    assert torch.equal(frozen, before["0.bias"])


def test_listing_shape() -> None:
    for names in LISTED.values():
        assert names == sorted(names)
        assert all(n == n.lower() for n in names)
    assert not set(LISTED["torch"]) & set(LISTED["timm"])
    assert {"adadelta", "adagrad", "adam", "adamax", "adamw", "asgd", "nadam", "radam", "rmsprop", "sgd"} <= set(
        LISTED["torch"]
    )
    assert {"adamp", "lamb"} <= set(LISTED["timm"])


def test_torch_group_covers_torch_optim() -> None:
    classes = {
        name
        for name, obj in vars(torch.optim).items()
        if isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer
    }
    listed = {type(create_optimizer(n, _model(), lr=0.1)).__name__ for n in LISTED["torch"]}
    assert classes - listed <= EXCLUDED_TORCH, "a torch optimizer is neither listed nor excluded with a reason"


def test_excluded_torch_optimizers_cannot_work_generically() -> None:
    model = _model()
    groups = lambda: timm.optim.param_groups_weight_decay(model, weight_decay=WEIGHT_DECAY)  # noqa: E731
    with pytest.raises(ValueError, match="parameter groups"):
        torch.optim.LBFGS(groups())
    nn.functional.mse_loss(model(_data()[0]), _data()[1]).backward()
    with pytest.raises(RuntimeError, match="dense gradients"):
        torch.optim.SparseAdam([p for p in model.parameters() if p.requires_grad]).step()
    if hasattr(torch.optim, "Muon"):
        with pytest.raises(ValueError, match="2D"):
            torch.optim.Muon(groups())
    assert "weight_decay" not in torch.optim.Rprop.__init__.__code__.co_varnames
    for name in EXCLUDED_TORCH - {"Muon"}:
        with pytest.raises(ValueError, match="is not supported: "):
            resolve_optimizer(name)
    assert type(create_optimizer("muon", model, lr=1e-3)) is timm.optim.Muon  # the name is timm's


def test_unlisted_timm_optimizers_say_why() -> None:
    unlisted = set(timm.optim.list_optimizers()) - set(ALL_NAMES)
    assert "adahessian" in unlisted
    for name in unlisted:
        with pytest.raises(ValueError, match="not usable on this install"):
            resolve_optimizer(name)
    with pytest.raises(ValueError, match="create_graph"):
        resolve_optimizer("adahessian")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only listing")
def test_gpu_only_timm_optimizers_are_not_listed_without_cuda() -> None:
    assert not [n for n in ALL_NAMES if n.startswith(("bnb", "fused"))]
    with pytest.raises(ValueError, match="bitsandbytes"):
        resolve_optimizer("bnbadamw")


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("adamw", torch.optim.AdamW),
        ("AdamW", torch.optim.AdamW),
        ("SGD", torch.optim.SGD),
        ("adamp", timm.optim.AdamP),
        ("LAMB", timm.optim.Lamb),
    ],
)
def test_doc_names_case_insensitive(name: str, cls: type) -> None:
    assert resolve_optimizer(name) == name.lower()
    assert type(create_optimizer(name, _model(), lr=1e-3)) is cls


def test_sgd_momentum_default_and_override() -> None:
    assert create_optimizer("sgd", _model(), lr=0.1).param_groups[0]["momentum"] == 0.9
    assert create_optimizer("sgd", _model(), lr=0.1, momentum=0.0).param_groups[0]["momentum"] == 0.0


def test_kwargs_reach_the_optimizer() -> None:
    optimizer = create_optimizer("adamw", _model(), lr=1e-3, betas=(0.8, 0.9))
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.9)
    optimizer = create_optimizer("lamb", _model(), lr=1e-3, trust_clip=True)
    assert optimizer.param_groups[0]["trust_clip"] is True


def test_no_weight_decay_names_are_respected() -> None:
    class WithScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(2, 2))
            self.proj = nn.Linear(2, 2)

        def no_weight_decay(self) -> set[str]:
            return {"scale"}

    for name in ("adamw", "lamb"):
        model = WithScale()
        optimizer = create_optimizer(name, model, lr=1e-3, weight_decay=0.05)
        decays = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
        assert decays[id(model.scale)] == 0.0
        assert decays[id(model.proj.weight)] == 0.05


def test_unknown_name_lists_closest() -> None:
    with pytest.raises(ValueError, match="Expected `optimizer` to be one of .*, but got 'adamx'") as info:
        resolve_optimizer("adamx")
    assert "'adamw'" in str(info.value) or "'adamax'" in str(info.value)
    with pytest.raises(ValueError, match="adamx"):
        create_optimizer("adamx", _model(), lr=1e-3)
    with pytest.raises(TypeError):
        resolve_optimizer(None)  # type: ignore[arg-type]


def test_bad_kwarg_names_the_key_and_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="'momentun'") as info:
        create_optimizer("adamw", _model(), lr=1e-3, momentun=0.9)
    assert "betas" in str(info.value)
    with pytest.raises(ValueError, match="'momentum'") as info:
        check_optimizer_kwargs("lamb", {"momentum": 0.9})
    assert "trust_clip" in str(info.value)
    with pytest.raises(ValueError, match="`lr`"):
        check_optimizer_kwargs("sgd", {"lr": 0.1})
    check_optimizer_kwargs("SGD", {"nesterov": True, "dampening": 0.0})


@pytest.mark.parametrize("lr", [0, -1e-3, float("nan"), float("inf")])
def test_bad_lr(lr: float) -> None:
    with pytest.raises(ValueError, match="`lr`"):
        create_optimizer("adamw", _model(), lr=lr)


def test_bad_types_and_weight_decay() -> None:
    with pytest.raises(TypeError, match="`lr`"):
        create_optimizer("adamw", _model(), lr="1e-3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`weight_decay`"):
        create_optimizer("adamw", _model(), lr=1e-3, weight_decay=-0.1)


def test_no_trainable_parameter() -> None:
    model = _model().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        create_optimizer("lamb", model, lr=1e-3)


def test_fused_implementation_by_default_unless_told_or_clipping() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
    assert create_optimizer("adamw", model, lr=1e-3).defaults["fused"] is True
    assert create_optimizer("sgd", model, lr=1e-3).defaults["fused"] is True
    assert not create_optimizer("adamw", model, lr=1e-3, allow_fused=False).defaults["fused"]
    assert not create_optimizer("adamw", model, lr=1e-3, foreach=True).defaults["fused"]
    assert not create_optimizer("rmsprop", model, lr=1e-3).defaults.get("fused")  # no fused kernel
