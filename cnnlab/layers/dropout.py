"""Inverted dropout: of elements (:class:`Dropout`) and of whole channels (:class:`Dropout2D`)."""

from __future__ import annotations

from .. import functional as F
from ..functional.dropout import check_probability
from ..shapes import check_int
from ..types import Array
from .base import Layer


class Dropout(Layer):
    """Inverted dropout: in training, zero each activation with probability ``p`` and scale the
    rest by ``1/(1-p)``; at evaluation, the identity.

    The mask is a pure function of a seed (see :func:`cnnlab.functional.dropout`): the layer's
    ``seed`` plus a counter of training forwards, or the seed a model sets for each step, so a
    seeded run repeats exactly, on the CPU or the GPU.
    """

    draws_masks = True

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        self.p = check_probability(p)
        self.seed = check_int("seed", seed, 0)
        self.step_seed = None  # set by a model for each training step
        self._calls = 0

    drop = staticmethod(F.dropout)
    drop_backward = staticmethod(F.dropout_backward)

    def forward(self, x: Array, training: bool = False) -> Array:
        if not training or self.p == 0:
            if training:
                self.saved = None, True
            return x
        if self.step_seed is not None:
            seed = self.step_seed
        else:
            seed = (self.seed * 1000003 + self._calls) % (2**31)
            self._calls += 1
        out, mask = type(self).drop(x, self.p, seed)
        self.saved = mask, False
        return out

    def backward(self, grad_out: Array) -> Array:
        mask, identity = self._need_saved()
        return grad_out if identity else type(self).drop_backward(mask, grad_out)

    def config(self) -> dict:
        return dict(p=self.p, seed=self.seed)


class Dropout2D(Dropout):
    """Channel dropout (``torch.nn.Dropout2d``, Keras's ``SpatialDropout2D``): in training, zero
    each whole channel of each sample with probability ``p`` and scale the rest by
    ``1/(1-p)``; at evaluation, the identity. Seeded as :class:`Dropout`
    (:func:`cnnlab.functional.dropout2d`)."""

    drop = staticmethod(F.dropout2d)
    drop_backward = staticmethod(F.dropout2d_backward)
