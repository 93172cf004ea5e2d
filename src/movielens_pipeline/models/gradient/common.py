"""The gradient family's contract: a model fitted by minibatch gradient steps on its loss, through Lightning
(`training/gradient.py`), with Adam and the L2 penalty on the per-user and per-movie rows each step looks up.

A model creates those rows as tables (`table`); whether they take sparse gradients (RowAdam) or dense ones is
training's choice (`training/optim.py`), not the model's.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import nn

from ..base import RatingModel


class GradientModel(RatingModel):
    """A model trained by gradient steps on `loss`: what it tells training is the batches it wants, each
    table's L2 penalty, and (`start_validation`) what to reset before each validation pass."""

    family = "gradient"
    # The training batches the model wants: any ratings in random order, or ratings grouped by movie.
    batches: ClassVar[Literal["ratings", "movies"]] = "ratings"
    optimizer_state_copies = 2  # Adam's (and RowAdam's) first and second moments

    def table_weight_decays(self) -> dict[nn.Module, float]:
        """Each table's L2 penalty, in the order the model holds them: the model's `weight_decay` unless it says
        otherwise (a model without tables has none, and may have no `weight_decay`)."""
        return {table: self.settings.weight_decay for table in self.modules() if isinstance(table, TABLES)}

    def start_validation(self) -> None:
        """Called before each validation pass (which calls `loss` in eval mode)."""


TABLES = (nn.Embedding, nn.EmbeddingBag)


def table(rows: int, columns: int, std: float = 0.0, bag: bool = False) -> nn.Embedding | nn.EmbeddingBag:
    """Per-user or per-movie parameters (a bag sums rows), N(0, std) at start, 0 if std is 0."""
    created = nn.EmbeddingBag(rows, columns, mode="sum") if bag else nn.Embedding(rows, columns)
    nn.init.normal_(created.weight, std=std) if std > 0 else nn.init.zeros_(created.weight)
    return created
