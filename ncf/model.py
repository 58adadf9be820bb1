"""The two-tower network (plain torch; training lives in `ncf.module`).

    learner tower: history bag (courses watched, weighted) --EmbeddingBag--> (B, bag_dim)
                   [+ learner ID embedding] -> act -> dropout -> MLP -> (B, d)
    course tower:  co-watch bag (top-k neighbours, by similarity) --EmbeddingBag--> (C, bag_dim)
                   [+ course ID embedding] [+ content bag: language, category, skills, title]
                   -> act -> dropout -> MLP -> (C, d)
    score:         dot product (B, C), or cosine / temperature

This is LinkedIn Learning's design: both inputs are sparse, so both go through EmbeddingBag
with per-sample weights. Learner-history pooling is a weighted sum (weights usually sum to 1)
or attention over the watched courses. With no bags and ID embeddings only, it is plain
matrix factorization trained by the same code (the MF baseline).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ncf.bags import Bags

__all__ = ["ACTIVATIONS", "Tower", "TwoTower"]

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "identity": nn.Identity}
NORMS = ("none", "layer", "batch")
POOLINGS = ("sum", "attention")
SCORES = ("dot", "cosine")


def bag_weights(bags: Bags, like: torch.Tensor) -> torch.Tensor:
    """(nnz,) the bags' weights in the dtype of `like` (an embedding table): bags are built
    float32 (`ncf.bags.csr_bags`), and a model in float64 or bfloat16 (`model.double()`)
    would otherwise fail in `EmbeddingBag` (per_sample_weights must match the table) or
    pool in mixed precision. No copy when the dtypes already agree."""
    return bags.weights if bags.weights.dtype == like.dtype else bags.weights.to(like.dtype)


class AttentionPool(nn.Module):
    """Softmax attention over a bag's entries; the bag weights enter as a log prior.

    a_j = softmax_j( v . tanh(W e_j) + log w_j ),  pooled = sum_j a_j e_j, per bag,
    computed on the flat (nnz, dim) entries with scatter ops: no padding to the longest bag.
    """

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.query = nn.Linear(hidden, 1, bias=False)

    def forward(self, table: torch.Tensor, bags: Bags) -> torch.Tensor:
        e = table[bags.indices]  # (nnz, dim)
        logit = self.query(torch.tanh(self.proj(e))).squeeze(-1)  # (nnz,)
        logit = logit + torch.log(bag_weights(bags, logit).clamp_min(1e-12))
        bag = bags.bag_of_entry()  # (nnz,)
        n = bags.n_bags
        peak = torch.full((n,), float("-inf"), device=e.device, dtype=logit.dtype)
        peak = peak.scatter_reduce(0, bag, logit, reduce="amax", include_self=True)
        a = torch.exp(logit - peak[bag])  # (nnz,)
        denom = torch.zeros(n, device=e.device, dtype=a.dtype).index_add(0, bag, a)
        a = a / denom[bag]
        return torch.zeros(n, e.shape[1], device=e.device, dtype=e.dtype).index_add(
            0, bag, a.unsqueeze(1) * e
        )  # (n, dim); an empty bag pools to zeros


class Tower(nn.Module):
    """Sparse inputs -> pooled (B, bag_dim) -> MLP -> (B, out_dim). Any input may be absent."""

    def __init__(
        self,
        n_bag_items: int,
        n_ids: int,
        n_content: int,
        *,
        bag_dim: int,
        mlp: Sequence[int],
        activation: str,
        dropout: float,
        norm: str,
        init_std: float,
        pooling: str,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        if norm not in NORMS or pooling not in POOLINGS:
            raise ValueError(
                f"norm must be in {NORMS} and pooling in {POOLINGS}; got {norm!r}, {pooling!r}"
            )
        if not (n_bag_items or n_ids or n_content):
            raise ValueError("a tower needs at least one input: a bag, ID embeddings or content")
        self.bag = nn.EmbeddingBag(n_bag_items, bag_dim, mode="sum") if n_bag_items else None
        self.ids = nn.Embedding(n_ids, bag_dim) if n_ids else None
        self.content = nn.EmbeddingBag(n_content, bag_dim, mode="sum") if n_content else None
        for table in (self.bag, self.ids, self.content):
            if table is not None:
                # std 0.5, not PyTorch's 1 or a small 0.05: with bag weights summing to 1 a
                # small init left the model at popularity level (calibrated on MovieLens-100K).
                nn.init.normal_(table.weight, std=init_std)
        self.attention = AttentionPool(bag_dim) if pooling == "attention" and self.bag else None
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = [act(), nn.Dropout(dropout)]
        width = bag_dim
        for i, out in enumerate(mlp):
            layers.append(nn.Linear(width, out))
            if i < len(mlp) - 1:  # the last layer is linear: the embedding feeds a dot product
                if norm == "layer":
                    layers.append(nn.LayerNorm(out))
                elif norm == "batch":
                    layers.append(nn.BatchNorm1d(out))
                layers += [act(), nn.Dropout(dropout)]
            width = out
        self.mlp = nn.Sequential(*layers)
        self.out_dim = width

    def forward(
        self, bags: Bags | None, ids: torch.Tensor | None = None, content: Bags | None = None
    ) -> torch.Tensor:
        parts = []
        if self.bag is not None:
            if bags is None:
                raise ValueError("this tower has a bag input: pass its Bags")
            if self.attention is not None:
                parts.append(self.attention(self.bag.weight, bags))
            else:
                weights = bag_weights(bags, self.bag.weight)
                parts.append(
                    self.bag(bags.indices, bags.offsets, per_sample_weights=weights)
                )  # (B, bag_dim)
        if self.ids is not None:
            if ids is None:
                raise ValueError("this tower has ID embeddings: pass the ids")
            # -1: no ID row (an id the model was not built with): a zero ID vector, the rows'
            # prior mean, so such a row is its other inputs alone (masked: no device sync)
            known = (ids >= 0).unsqueeze(1).to(self.ids.weight.dtype)
            parts.append(self.ids(ids.clamp_min(0)) * known)  # (B, bag_dim)
        if self.content is not None:
            if content is None:
                raise ValueError("this tower has content features: pass its content Bags")
            weights = bag_weights(content, self.content.weight)
            parts.append(self.content(content.indices, content.offsets, per_sample_weights=weights))
        pooled = parts[0] if len(parts) == 1 else torch.stack(parts).sum(0)
        return self.mlp(pooled)  # (B, out_dim)


class TwoTower(nn.Module):
    """Learner tower x course tower -> (B, C) scores.

    n_learners, n_courses: index spaces (learner ids map to rows, course ids to columns).
    learner_history / course_cowatch: use the sparse bags (LinkedIn's inputs).
    learner_ids / course_ids: add ID embeddings (options beyond the article; alone = MF).
    n_content_features: width of the course content bag (0 = none).
    course_bias: a learned per-course score offset (dot score only).
    score: "dot" or "cosine" (divided by `temperature`).
    """

    def __init__(
        self,
        n_learners: int,
        n_courses: int,
        *,
        bag_dim: int = 256,
        mlp: Sequence[int] = (128, 64),
        activation: str = "tanh",
        dropout: float = 0.3,
        norm: str = "none",
        init_std: float = 0.5,
        pooling: str = "sum",
        learner_history: bool = True,
        course_cowatch: bool = True,
        learner_ids: bool = False,
        course_ids: bool = False,
        n_content_features: int = 0,
        course_bias: bool = False,
        score: str = "dot",
        temperature: float = 0.1,
    ):
        super().__init__()
        # The constructor arguments, JSON-able: how a saved model is rebuilt before its weights load.
        self.config = dict(
            n_learners=n_learners, n_courses=n_courses, bag_dim=bag_dim, mlp=list(mlp),
            activation=activation, dropout=dropout, norm=norm, init_std=init_std, pooling=pooling,
            learner_history=learner_history, course_cowatch=course_cowatch,
            learner_ids=learner_ids, course_ids=course_ids,
            n_content_features=n_content_features, course_bias=course_bias, score=score,
            temperature=temperature,
        )  # fmt: skip
        if score not in SCORES:
            raise ValueError(f"score: must be one of {SCORES}, got {score!r}")
        if score == "cosine" and not temperature > 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        common = dict(
            bag_dim=bag_dim,
            mlp=tuple(mlp),
            activation=activation,
            dropout=dropout,
            norm=norm,
            init_std=init_std,
        )
        self.n_learners, self.n_courses = n_learners, n_courses
        self.learner_tower = Tower(
            n_courses if learner_history else 0,
            n_learners if learner_ids else 0,
            0,
            pooling=pooling,
            **common,
        )
        self.course_tower = Tower(
            n_courses if course_cowatch else 0,
            n_courses if course_ids else 0,
            n_content_features,
            pooling="sum",
            **common,
        )
        self.score_kind, self.temperature = score, temperature
        if course_bias and score == "cosine":
            raise ValueError("course_bias needs score='dot' (a bias has no place in a cosine)")
        # A per-course scalar (popularity, in effect) so the embeddings need not encode it.
        self.course_bias = nn.Parameter(torch.zeros(n_courses)) if course_bias else None

    @property
    def embedding_dim(self) -> int:
        return self.learner_tower.out_dim

    def learners(self, history: Bags | None, learner_idx: torch.Tensor) -> torch.Tensor:
        """(B, d) learner embeddings ((B, d + 1) with a course bias: a last column of ones).

        Each input is used only if the tower has it (the others may be None). With learner ID
        embeddings, an index of -1 is a learner without an ID row: its ID vector is zero.
        """
        t = self.learner_tower
        emb = t(history if t.bag is not None else None, learner_idx if t.ids is not None else None)
        if self.course_bias is None:
            return emb
        return torch.cat([emb, emb.new_ones(emb.shape[0], 1)], dim=1)

    def courses(
        self, cowatch: Bags | None, course_idx: torch.Tensor, content: Bags | None = None
    ) -> torch.Tensor:
        """(C, d) course embeddings ((C, d + 1) with the course bias as the last column), so a
        plain dot product with `learners` includes the bias and retrieval stays one matmul."""
        t = self.course_tower
        emb = t(
            cowatch if t.bag is not None else None,
            course_idx if t.ids is not None else None,
            content if t.content is not None else None,
        )
        if self.course_bias is None:
            return emb
        return torch.cat([emb, self.course_bias[course_idx].unsqueeze(1)], dim=1)

    def normalize(self, emb: torch.Tensor) -> torch.Tensor:
        """What the score is a dot product of: the embedding, or its unit vector for cosine."""
        return nn.functional.normalize(emb, dim=-1) if self.score_kind == "cosine" else emb

    def score(self, learners: torch.Tensor, courses: torch.Tensor) -> torch.Tensor:
        """(B, d) x (C, d) -> (B, C)."""
        s = self.normalize(learners) @ self.normalize(courses).T
        return s / self.temperature if self.score_kind == "cosine" else s

    def score_pairs(self, learners: torch.Tensor, courses: torch.Tensor) -> torch.Tensor:
        """Aligned rows (n, d) x (n, d) -> (n,): the diagonal of `score`, without the matrix."""
        s = (self.normalize(learners) * self.normalize(courses)).sum(-1)
        return s / self.temperature if self.score_kind == "cosine" else s
