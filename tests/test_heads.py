"""The neural heads: shapes, masking of missing views, gradients, and that they can learn."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from heads import build_head, head_names

NEURAL_HEADS = ["concat", "cvf", "late", "mean", "temporal"]
# Head configurations exercised by the behaviour tests (temporal also with its encoder layer).
CONFIGS = [(name, {}) for name in NEURAL_HEADS] + [("temporal", {"encoder_layers": 1})]
CONFIG_IDS = [name + ("+encoder" if options else "") for name, options in CONFIGS]

# Small sizes for the behaviour tests: B samples, V views, N tokens, D width, C classes.
B, V, N, D, C = 6, 3, 4, 32, 4


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # These tensors are tiny: with two threads on a busy 2-core machine each op waits for a
    # core, which made a 0.5 s training loop take 12 s. One thread is as fast when idle.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_head(name: str, **options) -> nn.Module:
    return build_head(name, dim=D, num_views=V, num_classes=C, tokens=N, hidden=64, **options)


def mixed_mask() -> torch.Tensor:
    """(B, V) bool: every view missing somewhere and present somewhere; one view per row min."""
    return torch.tensor(
        [[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1]], dtype=torch.bool
    )


def test_registry_lists_every_head():
    assert head_names() == sorted([*NEURAL_HEADS, "lightgbm"])


@pytest.mark.parametrize("name", NEURAL_HEADS)
def test_builds_quickly_at_real_size_and_gives_logits(name):
    torch.manual_seed(0)
    start = time.perf_counter()
    head = build_head(name, dim=768, num_views=5, num_classes=4, tokens=16)
    assert time.perf_counter() - start < 1.0
    head.eval()
    x = torch.randn(2, 5, 16, 768)
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    logits = head(x, mask)
    assert logits.shape == (2, 4) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NEURAL_HEADS)
def test_unknown_option_is_a_type_error(name):
    with pytest.raises(TypeError):
        build_head(name, dim=D, num_views=V, num_classes=C, tokens=N, hiden=64)


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=CONFIG_IDS)
def test_tokens_of_missing_views_do_not_change_logits(name, options):
    torch.manual_seed(0)
    head = small_head(name, **options).eval()
    x, mask = torch.randn(B, V, N, D), mixed_mask()
    loud, nan = x.clone(), x.clone()
    loud[~mask] = torch.randn(int((~mask).sum()), N, D) * 100.0
    nan[~mask] = float("nan")
    with torch.no_grad():
        reference = head(x, mask)
        assert torch.equal(head(loud, mask), reference)
        assert torch.equal(head(nan, mask), reference)
        # A present view's tokens do matter (the test above is not vacuous).
        changed = x.clone()
        changed[0, 0] += torch.randn(N, D)
        assert not torch.allclose(head(changed, mask)[0], reference[0])


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=CONFIG_IDS)
def test_one_valid_view_per_sample_works_and_samples_are_independent(name, options):
    torch.manual_seed(0)
    head = small_head(name, **options).eval()
    x = torch.randn(3, V, N, D)
    mask = torch.eye(3, V, dtype=torch.bool)  # sample i has only view i
    with torch.no_grad():
        batched = head(x, mask)
        alone = torch.cat([head(x[i : i + 1], mask[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, C) and torch.isfinite(batched).all()
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "options"),
    [config for config in CONFIGS if config[0] != "concat"],
    ids=[i for i in CONFIG_IDS if i != "concat"],
)
def test_missing_view_is_left_out_not_counted_as_zero_tokens(name, options):
    """[a, b, missing, missing] must equal [a, b, a, b]: a mean or an attention over a set is
    unchanged when each member is duplicated, but changes if missing views enter as zeros or
    as extra attention queries."""
    torch.manual_seed(0)
    head = build_head(name, dim=D, num_views=4, num_classes=C, tokens=N, hidden=64, **options)
    head.eval()
    # Make the views interchangeable, otherwise the duplicate is a different view.
    if name == "temporal":
        with torch.no_grad():
            head.view_embedding.zero_()
    if name == "late":
        for classifier in head.view_classifiers:
            classifier.load_state_dict(head.view_classifiers[0].state_dict())
    a_and_b = torch.randn(2, 2, N, D)
    with_missing = torch.cat([a_and_b, torch.zeros_like(a_and_b)], dim=1)  # (2, 4, N, D)
    duplicated = torch.cat([a_and_b, a_and_b], dim=1)  # (2, 4, N, D)
    first_two = torch.tensor([[1, 1, 0, 0]] * 2, dtype=torch.bool)
    with torch.no_grad():
        left_out = head(with_missing, first_two)
        reference = head(duplicated, torch.ones(2, 4, dtype=torch.bool))
    torch.testing.assert_close(left_out, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=CONFIG_IDS)
def test_every_parameter_gets_a_finite_nonzero_gradient(name, options):
    torch.manual_seed(0)
    head = small_head(name, **options).train()
    x, mask = torch.randn(B, V, N, D), mixed_mask()
    x[~mask] = float("nan")  # must not leak into the gradients either
    labels = torch.arange(B) % C
    nn.functional.cross_entropy(head(x, mask), labels).backward()
    for param_name, param in head.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


def test_cvf_parameter_count_matches_skillformer():
    head = build_head("cvf", dim=768, num_views=5, num_classes=4, tokens=16, hidden=1536)
    count = sum(p.numel() for p in head.parameters())
    # LayerNorm(768) 1,536 + MultiheadAttention(768) 2,362,368 + Linear(768->1536) 1,181,184
    # + LayerNorm(1536) 3,072 + gate Linear(1536->1536) 2,360,832 + Linear(1536->768) 1,180,416
    # + LayerNorm(768) 1,536 + 2 calibration scalars + Linear(768->4) 3,076 = 7,094,022 ~ 7.1M.
    # SkillFormer's Ego model reports 14M trainable: LoRA r=32 on the 7 TimeSformer-base target
    # modules is 12 layers x 589,824 = 7,077,888 (counted with peft), 7.08M + 7.09M = 14.17M.
    assert count == 7_094_022
    assert 7_000_000 <= count <= 7_200_000


@pytest.mark.parametrize(("dim", "heads"), [(768, 16), (32, 16), (40, 10), (24, 12), (7, 7)])
def test_cvf_attention_heads_divide_the_width(dim, heads):
    head = build_head("cvf", dim=dim, num_views=2, num_classes=3, tokens=2, hidden=16).eval()
    assert head.view_attention.num_heads == heads
    logits = head(torch.randn(2, 2, 2, dim), torch.tensor([[1, 1], [0, 1]], dtype=torch.bool))
    assert logits.shape == (2, 3)


def test_cvf_self_calibration_sets_feature_statistics():
    torch.manual_seed(0)
    head = small_head("cvf").eval()
    with torch.no_grad():
        fused = head.fuse(torch.randn(B, V, N, D), mixed_mask())  # (B, D)
    torch.testing.assert_close(fused.mean(dim=1), torch.full((B,), 0.0007), atol=1e-5, rtol=0)
    torch.testing.assert_close(fused.std(dim=1), torch.full((B,), 0.1168), atol=1e-4, rtol=0)


def test_late_output_is_log_of_mean_of_valid_view_softmaxes():
    torch.manual_seed(0)
    head = small_head("late").eval()
    x, mask = torch.randn(B, V, N, D), mixed_mask()
    with torch.no_grad():
        fused = head(x, mask)
        per_view = head.per_view_logits(x, mask)
    assert per_view.shape == (B, V, C)
    torch.testing.assert_close(fused.exp().sum(dim=1), torch.ones(B))
    for i in range(B):
        expected = per_view[i, mask[i]].softmax(dim=-1).mean(dim=0)
        torch.testing.assert_close(fused[i].exp(), expected)


def test_bad_inputs_get_clear_errors():
    head = small_head("temporal")
    x = torch.randn(2, V, N, D)
    with pytest.raises(ValueError, match="at least one valid view"):
        head(x, torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        head(torch.randn(2, V + 1, N, D), torch.ones(2, V + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="tokens per view"):
        head(torch.randn(2, V, N + 1, D), torch.ones(2, V, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_classes"):
        build_head("mean", dim=D, num_views=V, num_classes=1, tokens=N)


def toy_problem(samples: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels written into the mean of view 1 (always present); views 0 and 2 are noise and
    randomly missing. Returns x (S, V, N, D), mask (S, V), labels (S,)."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(samples) % C
    prototypes = torch.randn(C, D, generator=generator)  # (C, D)
    x = torch.randn(samples, V, N, D, generator=generator)
    x[:, 1] += 0.5 * prototypes[labels][:, None]  # (S, N, D) += (S, 1, D)
    mask = torch.rand(samples, V, generator=generator) < 0.6
    mask[:, 1] = True
    return x, mask, labels


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=CONFIG_IDS)
def test_can_overfit_a_tiny_separable_problem(name, options):
    torch.manual_seed(0)
    x, mask, labels = toy_problem()
    head = small_head(name, **options)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    accuracy = 0.0
    for step in range(300):
        head.train()
        loss = nn.functional.cross_entropy(head(x, mask), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 19:
            with torch.no_grad():
                accuracy = (head.eval()(x, mask).argmax(1) == labels).float().mean().item()
            if accuracy >= 0.9:
                break
    assert accuracy >= 0.9, f"{name}: train accuracy {accuracy:.2f} after {step + 1} steps"
