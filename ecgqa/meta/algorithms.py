"""Meta-learning algorithms over the projector, through learn2learn.

Every algorithm is an ``nn.Module`` holding the meta-parameters (the projector's
initialisation, and Meta-SGD's per-parameter rates) with the learn2learn interface::

    learner = algo.clone()          # a differentiable copy of the projector
    learner.adapt(support_loss)     # one inner SGD step on the copy
    tokens = learner(feats)         # (E, m, d_llm): use it as the model's projector

Registered in :data:`ecgqa.registry.META_ALGOS`:

- ``maml``: MAML (Finn et al. 2017), second order: the outer gradient flows through the
  inner updates (``create_graph``).
- ``fomaml``: first-order MAML, the inner gradients are treated as constants.
- ``anil``: ANIL (Raghu et al. 2020), the inner loop adapts the projector's last linear
  layer only; the body is learned by the outer loop alone.
- ``metasgd``: Meta-SGD (Li et al. 2017), a learned inner learning rate per parameter.
- ``supervised``: the baseline without meta-learning: no inner loop during training, the
  projector is fitted to the support and query answers of the same episodes.
"""

from __future__ import annotations

import contextlib
import io

from torch import nn

# learn2learn imports gym, which prints a deprecation notice to stderr on import
with contextlib.redirect_stderr(io.StringIO()):
    import learn2learn as l2l

from ecgqa.registry import META_ALGOS


class _Anil(nn.Module):
    """Body trained by the outer loop only; the head is a learn2learn MAML module."""

    def __init__(self, projector: nn.Module, lr: float, first_order: bool):
        super().__init__()
        self.projector = projector
        self.head = l2l.algorithms.MAML(projector.head, lr=lr, first_order=first_order)

    @property
    def first_order(self) -> bool:
        return self.head.first_order

    def clone(self) -> _AnilLearner:
        return _AnilLearner(self.projector, self.head.clone())


class _AnilLearner(nn.Module):
    def __init__(self, projector: nn.Module, head):
        super().__init__()
        self.projector, self.head = projector, head

    def adapt(self, loss, first_order: bool | None = None) -> None:
        self.head.adapt(loss, first_order=first_order)

    def forward(self, feats):
        p = self.projector
        return p.finish(self.head(p.body(feats)))                 # (E, m, d_llm)


class _Supervised(nn.Module):
    """No inner loop while training; ``clone`` is the projector itself.

    At test time a supervised projector is fine-tuned on the support set like the others
    (:func:`ecgqa.meta.loop.learner_for_test_time`), so the comparison isolates meta-training.
    """

    adapts_in_training = False
    first_order = True

    def __init__(self, projector: nn.Module, lr: float):
        super().__init__()
        self.projector, self.lr = projector, lr

    def clone(self) -> nn.Module:
        return self.projector


@META_ALGOS.register("maml")
def maml(projector: nn.Module, inner_lr: float, first_order: bool | None = None) -> nn.Module:
    return l2l.algorithms.MAML(projector, lr=inner_lr,
                               first_order=False if first_order is None else first_order)


@META_ALGOS.register("fomaml")
def fomaml(projector: nn.Module, inner_lr: float, first_order: bool | None = None) -> nn.Module:
    if first_order is False:
        raise ValueError("fomaml is first-order by definition; use maml for second order")
    return l2l.algorithms.MAML(projector, lr=inner_lr, first_order=True)


@META_ALGOS.register("anil")
def anil(projector: nn.Module, inner_lr: float, first_order: bool | None = None) -> nn.Module:
    if not hasattr(projector, "head") or not hasattr(projector, "body"):
        raise ValueError("anil needs a projector with body() and head (all built-in ones)")
    return _Anil(projector, inner_lr, first_order=bool(first_order))


@META_ALGOS.register("metasgd")
def metasgd(projector: nn.Module, inner_lr: float, first_order: bool | None = None) -> nn.Module:
    return l2l.algorithms.MetaSGD(projector, lr=inner_lr, first_order=bool(first_order))


@META_ALGOS.register("supervised")
def supervised(projector: nn.Module, inner_lr: float, first_order: bool | None = None
               ) -> nn.Module:
    return _Supervised(projector, inner_lr)


def build_algorithm(name: str, projector: nn.Module, inner_lr: float,
                    first_order: bool | None = None) -> nn.Module:
    """Wrap ``projector`` in the registered algorithm ``name``."""
    return META_ALGOS.build(name, projector=projector, inner_lr=inner_lr,
                            first_order=first_order)


def meta_parameters(algo: nn.Module) -> list[nn.Parameter]:
    """The parameters the outer loop updates (each once)."""
    seen, out = set(), []
    for p in algo.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
