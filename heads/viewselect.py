"""``viewselect`` head: ego and exo clip sequences summarised by query decoders, the top-k exo
views of each take chosen by a learned scorer (after AdaMVS)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from skill.errors import ConfigError
from skill.heads._ops import (
    ClipEmbedding,
    DecoderLayer,
    attention_heads,
    check_sequence_inputs,
    check_sizes,
    masked_mean,
    scatter_views,
)
from skill.heads.registry import register_head

MAX_ATTENTION_HEADS = 4
# Logit of a view that cannot be chosen: finite, so a take without any exo view stays NaN-free.
UNAVAILABLE = -1e4


@register_head("viewselect", reads="sequence")
class ViewSelectHead(nn.Module):
    """Ego and exo streams, each a transformer decoder with learnable queries over a view's
    clip sequence; a learned scorer keeps the top-``k`` exo views of each take.

    ``forward``: tokens ``(B, V, K, N, D)`` float32, view mask ``(B, V)`` bool (True = view
    present), clip mask ``(B, V, K)`` bool (True = the clip holds tokens), clip times
    ``(B, V, K, 2)`` float32 (start and end in seconds, 0 where absent) -> ``(B, O)`` logits.

    Exo views are those whose name starts with ``exo`` (``view_names``, the views fed, in
    order; without names the first view is ego, the others exo); the others are ego views.
    Steps:
    1. each clip of a present view: its N tokens averaged, projected D -> ``hidden`` H,
       LayerNorm, plus the sinusoidal encoding of its centre time in seconds -> (K, H)
    2. per view, its stream's decoder: ``queries`` learned queries, ``layers`` pre-norm
       decoder layers (self-attention over the queries, cross-attention over the clips with
       absent clips masked as keys, feed-forward 2H), LayerNorm, mean over the queries -> (H,)
    3. ego stream: the mean over the present ego views (one in EgoExo4D)
    4. exo stream: a score per present exo view (LayerNorm, Linear(H -> 1)); the ``k``
       highest (fewer where fewer are present) are kept and averaged. In training the
       choice is Gumbel-top-k: Gumbel noise added to the scores, the hard top-k forward and
       the gradient of a relaxed top-k (k successive softmaxes, each step's chosen mass
       taken out by adding log(1 - p)) backward (straight-through); at inference the hard
       top-k of the scores. A missing view is never chosen.
    5. the streams concatenated (zeros for a stream without a present view in the take),
       LayerNorm, Linear(-> H), GELU, Dropout, Linear(H -> O). A head fed only ego views
       (or only exo views) has that stream alone.

    After AdaMVS (2026 preprint) as its description reads: the two streams, decoders with
    learnable queries over the clip sequence, the learned top-k exo choice with a
    Gumbel-softmax straight-through estimator in training and hard top-k at inference, k an
    option. This head's own choices: the sizes, the time encoding, mean pooling over the
    queries, the scorer, the relaxed top-k, the average of the chosen views and the
    concatenation of the streams.
    """

    pools_tokens = True  # its first step is the mean over each clip's tokens

    def __init__(
        self,
        dim: int,
        num_views: int,
        outputs: int,
        view_names: list[str] | None = None,
        hidden: int = 64,
        queries: int = 4,
        layers: int = 1,
        k: int = 2,
        heads: int = MAX_ATTENTION_HEADS,
        dropout: float = 0.1,
    ):
        super().__init__()
        check_sizes(dim, num_views, outputs, hidden)
        if hidden < 2 or queries < 1 or layers < 1 or k < 1 or heads < 1:
            raise ConfigError(
                f"viewselect head needs hidden >= 2, queries, layers, k and heads >= 1, got "
                f"hidden={hidden}, queries={queries}, layers={layers}, k={k}, heads={heads}"
            )
        names = list(view_names) if view_names is not None else ["ego"] + ["exo"] * (num_views - 1)
        if len(names) != num_views:
            raise ValueError(f"view_names has {len(names)} names for {num_views} views")
        self.dim, self.num_views, self.k = dim, num_views, k
        exo = torch.tensor([name.startswith("exo") for name in names], dtype=torch.bool)
        self.register_buffer("exo", exo, persistent=False)  # (V,) True = an exo view
        self.embed = ClipEmbedding(dim, hidden)
        decoder = (hidden, queries, layers, attention_heads(hidden, heads), dropout)
        has_ego, has_exo = bool((~exo).any()), bool(exo.any())
        self.ego_stream = QueryDecoder(*decoder) if has_ego else None
        self.exo_stream = QueryDecoder(*decoder) if has_exo else None
        self.scorer = (
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 1, bias=False))
            if has_exo
            else None
        )
        streams = int(has_ego) + int(has_exo)
        self.classifier = nn.Sequential(
            nn.LayerNorm(streams * hidden),
            nn.Linear(streams * hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, outputs),
        )

    def forward(self, x: Tensor, mask: Tensor, clip_mask: Tensor, clip_times: Tensor) -> Tensor:
        """``(B, V, K, N, D), (B, V), (B, V, K), (B, V, K, 2) -> (B, O)``."""
        check_sequence_inputs(x, mask, clip_mask, clip_times, self.num_views, self.dim)
        summaries = self.summarise(x, mask, clip_mask, clip_times)  # (B, V, H)
        streams = []
        if self.ego_stream is not None:
            ego = mask & ~self.exo  # (B, V)
            streams.append(masked_mean(summaries, ego))  # zeros where no ego view is present
        if self.exo_stream is not None:
            chosen = self.choose(summaries[:, self.exo], mask[:, self.exo])  # (B, E)
            count = chosen.detach().sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
            streams.append(torch.einsum("be,beh->bh", chosen, summaries[:, self.exo]) / count)
        return self.classifier(torch.cat(streams, dim=1))  # (B, O)

    def summarise(self, x: Tensor, mask: Tensor, clip_mask: Tensor, clip_times: Tensor) -> Tensor:
        """Steps 1-2: ``-> (B, V, H)``, zeros for missing views."""
        sequence, padding = self.embed(x, mask, clip_mask, clip_times)  # (M, K, H), (M, K)
        exo = self.exo.expand_as(mask)[mask]  # (M,) the stream of each present view
        summary = sequence.new_zeros(len(sequence), sequence.shape[-1])  # (M, H)
        if self.ego_stream is not None and (~exo).any():
            summary = summary.index_put((~exo,), self.ego_stream(sequence[~exo], padding[~exo]))
        if self.exo_stream is not None and exo.any():
            summary = summary.index_put((exo,), self.exo_stream(sequence[exo], padding[exo]))
        return scatter_views(summary, mask)

    def choose(self, summaries: Tensor, available: Tensor) -> Tensor:
        """Step 4's weights ``(B, E)`` of the exo views (1 = kept, 0 = not; in training with
        the relaxed top-k's gradient): ``summaries (B, E, H)``, ``available (B, E)``."""
        scores = self.scorer(summaries)[..., 0].masked_fill(~available, UNAVAILABLE)  # (B, E)
        if self.training:
            uniform = torch.rand_like(scores).clamp(1e-6, 1 - 1e-6)
            scores = scores - torch.log(-torch.log(uniform))  # Gumbel noise
        top = scores.topk(min(self.k, scores.shape[1]), dim=1).indices
        hard = torch.zeros_like(scores).scatter(1, top, 1.0) * available  # never a missing view
        if not self.training:
            return hard
        soft = relaxed_top_k(scores, self.k) * available
        return hard + soft - soft.detach()  # straight-through: hard forward, soft gradient

    def exo_choice(self, x: Tensor, mask: Tensor, clip_mask: Tensor, clip_times: Tensor) -> Tensor:
        """The exo views each take keeps at inference: ``(B, E)`` bool, E = exo views in
        order (empty for a head without exo views)."""
        if self.exo_stream is None:
            return torch.zeros(len(x), 0, dtype=torch.bool, device=x.device)
        summaries = self.summarise(x, mask, clip_mask, clip_times)
        was = self.training
        self.eval()
        try:
            return self.choose(summaries[:, self.exo], mask[:, self.exo]) > 0
        finally:
            self.train(was)


def relaxed_top_k(scores: Tensor, k: int) -> Tensor:
    """A differentiable k-hot ``(B, E)``: the sum of k successive softmaxes of ``scores``,
    each taking out what the previous chose (adding log(1 - p) to the scores)."""
    khot = torch.zeros_like(scores)
    for _ in range(min(k, scores.shape[1])):
        chosen = scores.softmax(dim=1)
        khot = khot + chosen
        scores = scores + torch.log1p(-chosen.clamp(max=1 - 1e-6))
    return khot


class QueryDecoder(nn.Module):
    """Learned queries read one view's clip sequence: ``(M, K, H)`` clips and their key
    padding mask ``(M, K)`` (True = absent clip) -> ``(M, H)``, the mean over the queries of
    ``layers`` pre-norm decoder layers' output (:class:`heads._ops.DecoderLayer`),
    layer-normed."""

    def __init__(self, hidden: int, queries: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, hidden) * 0.02)  # (Q, H)
        self.layers = nn.ModuleList(DecoderLayer(hidden, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, sequence: Tensor, padding: Tensor) -> Tensor:
        state = self.queries.expand(len(sequence), -1, -1)  # (M, Q, H)
        for layer in self.layers:
            state = layer(state, sequence, padding)
        return self.norm(state).mean(dim=1)  # (M, H)
