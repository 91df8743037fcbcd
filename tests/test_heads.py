"""Every registered head: shapes, masking of missing views, gradients, that it can learn, and
that it fits, predicts and reloads through a run folder. The head lists come from the
registry (like timm's tests over ``list_models()``): a new head file is tested without
editing this file."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from skill.heads import HEADS, build_head, head_names
from skill.heads._ops import masked_mean, pool_tokens
from skill.heads.cvf import ViewAttentionPool
from skill.heads.lgbm import LightGBMSettings
from skill.heads.registry import HEAD_READS, is_trainable

ALL_HEADS = head_names()
# Heads that read one clip at a time; those that read clip sequences: tests/test_sequence_heads.py
CLIP_HEADS = [name for name in ALL_HEADS if HEAD_READS[name] == "clip"]
NEURAL_HEADS = [name for name in CLIP_HEADS if not is_trainable(HEADS[name])]
# Extra head configurations exercised by the behaviour tests (temporal with its encoder layer).
VARIANTS = {"temporal": [{"encoder_layers": 1}]}
CONFIGS = [(name, {}) for name in NEURAL_HEADS] + [
    (name, options) for name in NEURAL_HEADS for options in VARIANTS.get(name, [])
]
CONFIG_IDS = [name + ("+" + "+".join(options) if options else "") for name, options in CONFIGS]
# Heads whose output depends on each view's position (a duplicated view is another view).
POSITIONAL = {"concat"}
HEADS_DIR = Path(__file__).resolve().parents[1] / "heads"

# Small sizes for the behaviour tests: B samples, V views, N tokens, D width, C classes.
B, V, N, D, C = 6, 3, 4, 32, 4


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # These tensors are tiny: with two threads on a busy 2-core machine each op waits for a
    # core. One thread is as fast when idle.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_head(name: str, **options) -> nn.Module:
    return build_head(name, dim=D, num_views=V, outputs=C, tokens=N, hidden=64, **options)


def mixed_mask() -> torch.Tensor:
    """(B, V) bool: every view missing somewhere and present somewhere; one view per row min."""
    return torch.tensor(
        [[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1]], dtype=torch.bool
    )


def test_the_head_list_names_every_head_file_and_the_head_it_registers():
    # HEAD_FILES is what a command checks a head name against without torch: it must name
    # every file that registers a head, beside the name that file registers.
    from skill.heads import HEAD_FILES

    registering = {
        path.stem
        for path in HEADS_DIR.glob("*.py")
        if any(line.startswith("@register_head(") for line in path.read_text().splitlines())
    }
    assert set(HEAD_FILES.values()) == registering
    assert {name: HEADS[name].__module__.rsplit(".", 1)[1] for name in ALL_HEADS} == HEAD_FILES
    assert {"mean", "concat", "late", "cvf", "temporal", "lightgbm"} <= set(ALL_HEADS)
    assert NEURAL_HEADS and "lightgbm" not in NEURAL_HEADS


@pytest.mark.parametrize("name", NEURAL_HEADS)
def test_a_head_declares_only_the_sizes_it_uses(name):
    # Built with every size of the store offered, a head receives the ones it declares;
    # tokens only where the token count shapes its weights (temporal's time embedding).
    from skill.heads.registry import resolve_head

    spec = resolve_head(name)
    declared = set(inspect.signature(spec.cls).parameters)
    assert {"dim", "num_views", "outputs"} <= declared
    assert ("tokens" in declared) == (name == "temporal")
    offered = {"dim": D, "num_views": V, "outputs": C, "tokens": N, "hidden": 16, "dropout": 0.0}
    assert set(spec.arguments(offered)) == declared & set(offered)


@pytest.mark.parametrize("name", NEURAL_HEADS)
def test_neural_head_is_a_plain_module_whose_docstring_states_its_shapes(name):
    cls = HEADS[name]
    assert issubclass(cls, nn.Module)
    doc = (inspect.getdoc(cls) or "") + (inspect.getdoc(cls.forward) or "")
    assert "(B, V, N, D)" in doc and "(B, O)" in doc, name


@pytest.mark.parametrize("name", NEURAL_HEADS)
def test_builds_at_real_size_and_gives_logits(name):
    torch.manual_seed(0)
    head = build_head(name, dim=768, num_views=5, outputs=4, tokens=16)
    head.eval()
    x = torch.randn(2, 5, 16, 768)
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    logits = head(x, mask)
    assert logits.shape == (2, 4) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NEURAL_HEADS)
def test_unknown_option_is_a_type_error(name):
    with pytest.raises(TypeError):
        build_head(name, dim=D, num_views=V, outputs=C, tokens=N, hiden=64)


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
    [config for config in CONFIGS if config[0] not in POSITIONAL],
    ids=[i for i, config in zip(CONFIG_IDS, CONFIGS, strict=True) if config[0] not in POSITIONAL],
)
def test_missing_view_is_left_out_not_counted_as_zero_tokens(name, options):
    """[a, b, missing, missing] must equal [a, b, a, b]: a mean or an attention over a set is
    unchanged when each member is duplicated, but changes if missing views enter as zeros or
    as extra attention queries."""
    torch.manual_seed(0)
    head = build_head(name, dim=D, num_views=4, outputs=C, tokens=N, hidden=64, **options)
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
    head = build_head("cvf", dim=768, num_views=5, outputs=4, tokens=16, hidden=1536)
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
    head = build_head("cvf", dim=dim, num_views=2, outputs=3, tokens=2, hidden=16).eval()
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


def randomised_view_pool(dim: int, heads: int, dropout: float = 0.0) -> ViewAttentionPool:
    """A ViewAttentionPool with every parameter random, biases included (they init to zero,
    which would leave the bias terms untested); scores stay O(1) so the softmax is not flat."""
    pool = ViewAttentionPool(dim, heads, dropout)
    with torch.no_grad():
        for param in pool.parameters():
            scale = dim**-0.5 if param.dim() == 2 else 1.0  # weights, biases
            param.copy_(torch.randn_like(param) * scale)
    return pool


def mha_copy(pool: ViewAttentionPool) -> nn.MultiheadAttention:
    """nn.MultiheadAttention (the previous cvf formulation) holding the pool's weights."""
    attention = nn.MultiheadAttention(
        pool.embed_dim, pool.num_heads, dropout=pool.dropout, batch_first=True
    )
    attention.load_state_dict(pool.state_dict())
    return attention.train(pool.training)


def attend_then_average(
    attention: nn.MultiheadAttention, views: torch.Tensor, mask: torch.Tensor, **options
) -> torch.Tensor:
    """The previous cvf steps 3-4: ``(B, V, D), (B, V) -> (B, D)``."""
    attended, _ = attention(views, views, views, key_padding_mask=~mask, **options)  # (B, V, D)
    return masked_mean(attended, mask)


def random_view_mask(samples: int, views: int) -> torch.Tensor:
    """(S, V) bool with one row all present, one row with a single view, >= 1 view per row."""
    mask = torch.rand(samples, views) < 0.5
    mask[0], mask[1] = True, False
    mask[torch.arange(samples), torch.randint(views, (samples,))] = True
    return mask


def outputs_and_gradients(
    module: nn.Module, run, views: torch.Tensor, upstream: torch.Tensor, seed: int = 7
):
    """``run(views)`` and the gradients of ``(output * upstream).sum()`` w.r.t. the views and
    every parameter of ``module`` (by name). Seeds torch first: dropout draws repeat."""
    views = views.clone().requires_grad_()
    torch.manual_seed(seed)
    output = run(views)
    (output * upstream).sum().backward()
    grads = {name: param.grad for name, param in module.named_parameters()}
    return output, views.grad, grads


@pytest.mark.parametrize(("dim", "heads", "views"), [(768, 16, 5), (40, 10, 4), (40, 10, 1)])
def test_view_attention_pool_equals_multihead_attention_then_masked_mean(dim, heads, views):
    torch.manual_seed(0)
    pool = randomised_view_pool(dim, heads, dropout=0.1).eval()  # eval: dropout off
    reference = mha_copy(pool)
    x, mask = torch.randn(8, views, dim), random_view_mask(8, views)
    upstream = torch.randn(8, dim)
    out, x_grad, grads = outputs_and_gradients(pool, lambda v: pool(v, mask), x, upstream)
    ref_out, ref_x_grad, ref_grads = outputs_and_gradients(
        reference,
        lambda v: attend_then_average(reference, v, mask, need_weights=False),
        x,
        upstream,
    )
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5 * ref_out.abs().max().item())
    torch.testing.assert_close(x_grad, ref_x_grad, rtol=1e-4, atol=1e-5 * ref_x_grad.abs().max())
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        scale = ref_grads[name].abs().max().item()
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-5 * scale + 1e-7)
    # Each head's weighting matters: not every view gets the same attention.
    if views > 1:
        assert ref_grads["in_proj_weight"][: 2 * dim].abs().max() > 0


@pytest.mark.parametrize("views", [5, 1])
def test_view_attention_pool_dropout_matches_multihead_attention_draw_for_draw(views):
    """Training mode: nn.MultiheadAttention's need_weights=True path applies torch's dropout to
    its (B*H, Vq, Vk) probabilities, and the pool to its (B, H, Vq, Vk) ones (same layout), so
    from the same seed both drop the same probabilities and must agree exactly, which tests the
    1/(1-p) scaling and the bias term whose weights no longer sum to 1. (need_weights=False's
    fused kernel draws its dropout differently: same distribution, other draws.)"""
    torch.manual_seed(0)
    dim, heads = 40, 10
    pool = randomised_view_pool(dim, heads, dropout=0.3).train()
    reference = mha_copy(pool)
    x, mask = torch.randn(16, views, dim), random_view_mask(16, views)
    upstream = torch.randn(16, dim)
    out, x_grad, grads = outputs_and_gradients(pool, lambda v: pool(v, mask), x, upstream)
    ref_out, ref_x_grad, ref_grads = outputs_and_gradients(
        reference, lambda v: attend_then_average(reference, v, mask), x, upstream
    )
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x_grad, ref_x_grad, rtol=1e-4, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-5)
    # Dropout is active: finite, unlike eval mode, and another seed drops other probabilities.
    with torch.no_grad():
        assert torch.isfinite(out).all()
        assert not torch.allclose(out, pool.eval()(x, mask), atol=1e-3)
        torch.manual_seed(8)
        assert not torch.allclose(out, pool.train()(x, mask), atol=1e-3)


def test_cvf_head_equals_the_multihead_attention_formulation_and_loads_its_state_dict():
    """A head of the previous cvf (nn.MultiheadAttention + masked mean) saves a state dict that
    loads strictly, and the head then computes what that head computed."""
    torch.manual_seed(0)
    previous = small_head("cvf").eval()
    previous.view_attention = nn.MultiheadAttention(
        D, previous.view_attention.num_heads, batch_first=True
    ).eval()
    with torch.no_grad():
        for param in previous.parameters():
            param.normal_(0, 0.5)
    head = small_head("cvf").eval()
    assert list(previous.state_dict()) == list(head.state_dict())  # same names, same order
    head.load_state_dict(previous.state_dict())  # strict
    x, mask = torch.randn(B, V, N, D), mixed_mask()

    def previous_forward(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        views = previous.view_norm(pool_tokens(x, mask))  # (B, V, D)
        fused = attend_then_average(previous.view_attention, views, mask, need_weights=False)
        hidden = previous.up(fused)  # (B, H)
        hidden = hidden * torch.sigmoid(previous.gate(hidden))  # (B, H)
        return previous.classifier(previous.calibrate(previous.down(hidden)))  # (B, C)

    torch.testing.assert_close(head(x, mask), previous_forward(x, mask), rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # nn.MultiheadAttention's inference fast path
        torch.testing.assert_close(head(x, mask), previous_forward(x, mask), rtol=1e-4, atol=1e-5)


def test_view_attention_pool_initialises_like_multihead_attention():
    torch.manual_seed(3)
    reference = nn.MultiheadAttention(40, 10, dropout=0.1, batch_first=True)
    torch.manual_seed(3)
    pool = ViewAttentionPool(40, 10, dropout=0.1)
    assert [(n, p.shape) for n, p in pool.named_parameters()] == [
        (n, p.shape) for n, p in reference.named_parameters()
    ]
    for (name, param), expected in zip(
        pool.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(param, expected), name


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
    with pytest.raises(ValueError, match="outputs"):
        build_head("mean", dim=D, num_views=V, outputs=0, tokens=N)


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


# ---- every head kind through the TrainableHead interface and the run folder ---------------

QUICK = dict(epochs=3, batch_size=16, lr=3e-3, hidden=16, patience=0, plots=False,
             lightgbm=LightGBMSettings(lgbm_rounds=20, lgbm_learning_rate=0.1))  # fmt: skip


@pytest.mark.parametrize("name", CLIP_HEADS)
def test_every_head_fits_predicts_and_reloads_identically(name, store, tmp_path):
    from skill.heads.config import FitConfig
    from skill.heads.interface import TrainableHead
    from skill.heads.run_folder import load_head, read_run_record
    from skill.heads.train import fit

    result = fit(FitConfig(store=str(store.path), head=name, out_dir=str(tmp_path), **QUICK))
    record = read_run_record(result.run_dir)
    assert record.model.head == name and (result.run_dir / record.model.file).is_file()
    head = load_head(result.run_dir, record.model)
    assert isinstance(head, TrainableHead)
    from skill.heads.data import load_selection, split_takes

    sel = load_selection(store.path, "all")
    rows = split_takes(sel, 0.2, 0).val
    probs = head.predict_scores(sel.x, sel.mask, sel.task, rows, batch_size=16)
    assert probs.shape == (len(rows), len(record.task["schema"]["labels"]))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    # The reloaded head gives exactly the probabilities the fit wrote.
    assert np.array_equal(probs, result.predictions["val"][1])
    # Tokens of masked views do not change a take's probabilities.
    noisy = sel.x.copy()
    mask = sel.mask.copy()
    mask[rows[::2], 0] = False
    mask[~mask.any(axis=1), 1] = True
    noisy[~mask] = np.random.default_rng(0).normal(0, 50, noisy[~mask].shape)
    clean = np.where(mask[:, :, None, None, None], sel.x, 0).astype(sel.x.dtype)
    assert np.array_equal(
        head.predict_scores(noisy, mask, sel.task, rows, batch_size=16),
        head.predict_scores(clean, mask, sel.task, rows, batch_size=16),
    )


def test_importing_the_configs_imports_no_torch_lightgbm_or_zarr():
    code = (
        "import sys, skill.heads.config\n"
        "heavy = [m for m in ('torch', 'lightgbm', 'zarr') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _imported_heads_modules(path: Path) -> set[str]:
    """``skill.heads`` modules a heads file imports (anywhere, type-checking imports aside)."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.split(".")[2] for n in names if n.startswith("skill.heads.")}
    return found & {p.stem for p in HEADS_DIR.glob("*.py")}


def test_heads_modules_import_no_cycle_and_nothing_of_the_pipeline():
    graph = {p.stem: _imported_heads_modules(p) for p in HEADS_DIR.glob("*.py")}

    def visit(module: str, path: tuple[str, ...]) -> None:
        for dep in graph.get(module, ()):
            assert dep not in path, " -> ".join((*path, dep))
            visit(dep, (*path, dep))

    for module in graph:
        visit(module, (module,))
    for path in HEADS_DIR.glob("*.py"):
        assert "skill.pipeline" not in path.read_text(), path.name


def test_mean_head_averages_learned_view_embeddings_not_raw_tokens():
    """Two takes whose views have the same raw mean but differ view by view: a mean of the
    raw tokens cannot tell them apart; the mean of per-view embeddings can.
    Swapping the views of one take leaves its output as it is (a mean has no view order)."""
    head = small_head("mean").eval()
    a, b = torch.randn(N, D), torch.randn(N, D)
    mid = (a + b) / 2
    x = torch.zeros(2, V, N, D)
    x[0, 0], x[0, 1] = a, b
    x[1, 0], x[1, 1] = mid, mid
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        out = head(x, mask)
        swapped = head(x[:, [1, 0, 2]], mask)
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    torch.testing.assert_close(out, swapped)
