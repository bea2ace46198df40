"""Swap torch's dropout modules for dropkit's in an existing model, and back.

``dk.convert(model)`` and ``dk.revert(model)`` work like
``nn.SyncBatchNorm.convert_sync_batchnorm``: walk the module tree, build the
replacement of each matching module, put it where the old one was, and return
the (possibly new) top-level module.
"""

from __future__ import annotations

import inspect

from torch import nn

from dropkit import layers

__all__ = ["convert", "revert"]

# torch and dropkit spell these six classes the same way. The dropkit classes
# are looked up on ``dropkit.layers`` at call time, not bound at import, so a
# class added or redefined later (and monkeypatching in tests) is picked up.
_NAMES = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout")


def _accepts(cls: type, argument: str) -> bool:
    return argument in inspect.signature(cls).parameters


def _rebuild(old: nn.Module, cls: type) -> nn.Module:
    """A ``cls`` with ``old``'s ``p``, ``inplace`` (where ``cls`` takes it) and ``training``."""
    kwargs = {"p": old.p}
    if _accepts(cls, "inplace"):
        kwargs["inplace"] = getattr(old, "inplace", False)
    new = cls(**kwargs)
    new.training = old.training
    return new


def _torch_to_dropkit(module: nn.Module, path: str) -> nn.Module:
    for name in _NAMES:
        dropkit_cls = getattr(layers, name, None)
        # Exact type, not isinstance: dropkit's layers subclass torch's, and a
        # user's subclass of nn.Dropout may carry behaviour we must not drop.
        if type(module) is getattr(nn, name) and dropkit_cls is not None:
            return _rebuild(module, dropkit_cls)
    return module


def _dropkit_to_torch(strict: bool):
    def replace(module: nn.Module, path: str) -> nn.Module:
        for name in _NAMES:
            dropkit_cls = getattr(layers, name, None)
            if dropkit_cls is None or type(module) is not dropkit_cls:
                continue
            # The classic formulation scales at test time; torch has no such layer.
            if not getattr(module, "inverted", True):
                if strict:
                    where = repr(path) if path else "(the top-level module)"
                    raise ValueError(
                        f"dk.revert(strict=True): module {where} is {module!r}, which torch "
                        f"cannot represent (torch's nn.{name} is inverted dropout only). "
                        "Use strict=False to leave it in place."
                    )
                return module
            return _rebuild(module, getattr(nn, name))
        return module

    return replace


def _walk(module: nn.Module, replace, path: str, memo: dict[nn.Module, nn.Module]) -> nn.Module:
    # The memo maps each visited module to its output, so a module registered
    # twice (the same dropout in two places, a shared block) gets ONE
    # replacement, and a cycle in the tree terminates. Keyed by the module
    # itself (identity hash), which also keeps the old modules alive: no id
    # can be reused by a new module during the walk.
    if module in memo:
        return memo[module]
    module_output = replace(module, path)
    memo[module] = module_output
    # _modules, not named_children(): named_children() yields a child
    # registered under two names only once, so the second slot would be missed.
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        child_path = f"{path}.{name}" if path else name
        module_output.add_module(name, _walk(child, replace, child_path, memo))
    return module_output


def convert(module: nn.Module) -> nn.Module:
    r"""Replace every torch dropout module of ``module`` by dropkit's equivalent.

    ``nn.Dropout``, ``nn.Dropout1d/2d/3d``, ``nn.AlphaDropout`` and
    ``nn.FeatureAlphaDropout`` become ``dropkit.Dropout``,
    ``dropkit.Dropout1d/2d/3d``, ``dropkit.AlphaDropout`` and
    ``dropkit.FeatureAlphaDropout`` with the same ``p``, ``inplace`` and
    ``training`` flag. The model is changed in place, like
    ``nn.SyncBatchNorm.convert_sync_batchnorm``, and returned; if ``module``
    is itself a torch dropout, the new dropkit module is returned and
    ``module`` is left as it was, so always use the return value.

    Details:

    - Matching is by exact type (``type(m) is nn.Dropout``): subclasses of the
      torch classes, yours or dropkit's own layers (which subclass torch's),
      are left untouched.
    - A module registered in several places (the same instance twice) is
      replaced by ONE new instance, used in all of them.
    - Nested containers (``nn.Sequential``, ``nn.ModuleList``,
      ``nn.ModuleDict``, any module's children) are converted at any depth.
    - Dropout has no parameters or buffers, so ``state_dict()`` keys and values
      are unchanged, and in eval mode the model computes exactly what it did.
    - Hooks (forward, pre-forward, backward, state-dict) registered on an old
      dropout module are not carried over to its replacement, as with
      ``convert_sync_batchnorm``; nor are other attributes you set on it.
    - ``inplace`` is passed only to a dropkit class whose constructor takes
      it; one that does not runs out of place, with the same values.

    What it cannot reach: dropout that torch code applies with a functional
    call rather than through a module. ``nn.MultiheadAttention`` (so the
    self-attention inside ``nn.TransformerEncoderLayer`` /
    ``nn.TransformerDecoderLayer``) drops attention weights through its
    ``dropout`` float, passed as ``dropout_p`` to
    ``F.scaled_dot_product_attention`` or ``F.dropout``; ``nn.LSTM`` /
    ``nn.GRU`` / ``nn.RNN``'s ``dropout=`` between layers is inside the
    fused kernel. These keep torch's dropout; only the ``nn.Dropout``-family
    modules of the layer (``dropout``, ``dropout1``, ``dropout2`` in a
    transformer layer) are converted. Functional calls in your own
    ``forward`` code are not converted either.

    Args:
        module: the model (or a single torch dropout module).

    Returns:
        ``module`` with its dropout modules replaced, or the new dropkit module
        when ``module`` itself is a torch dropout.

    Examples::

        >>> layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dropout=0.1)
        >>> model = dropkit.convert(nn.TransformerEncoder(layer, num_layers=2))
        >>> model.layers[0].dropout1
        Dropout(p=0.1, inplace=False, inverted=True)
        >>> model = dropkit.revert(model)   # back to torch's nn.Dropout
    """
    return _walk(module, _torch_to_dropkit, "", {})


def revert(module: nn.Module, *, strict: bool = False) -> nn.Module:
    r"""Replace every dropkit dropout module of ``module`` by torch's equivalent.

    The way back from :func:`convert`: ``dropkit.Dropout``,
    ``dropkit.Dropout1d/2d/3d``, ``dropkit.AlphaDropout`` and
    ``dropkit.FeatureAlphaDropout`` become ``nn.Dropout``,
    ``nn.Dropout1d/2d/3d``, ``nn.AlphaDropout`` and ``nn.FeatureAlphaDropout``
    with the same ``p``, ``inplace`` (``False`` for a dropkit layer without
    one) and ``training`` flag, in place; the (possibly new) top-level module
    is returned. Matching is by exact type, so subclasses are left alone;
    shared instances, nested containers and hooks are handled as in
    :func:`convert` (hooks are not carried over).

    Only settings torch can represent are reverted: ``dropkit.Dropout(...,
    inverted=False)`` (the classic formulation, which scales by ``1-p`` at
    test time) has no torch equivalent and is left as it is, or, with
    ``strict=True``, raises. Other dropkit layers (``DropPath``,
    ``DropBlock2d``, ``GaussianDropout``, ...) have no torch counterpart and
    are never touched.

    Args:
        module: the model (or a single dropkit dropout module).
        strict: raise ``ValueError``, naming the module's path in the model,
            on a dropkit dropout module torch cannot represent, instead of
            leaving it in place. Default: ``False``.

    Returns:
        ``module`` with its dropkit dropout modules replaced, or the new torch
        module when ``module`` itself is one.

    Examples::

        >>> model = nn.Sequential(nn.Linear(8, 8), dropkit.Dropout(0.2))
        >>> dropkit.revert(model)[1]
        Dropout(p=0.2, inplace=False)
        >>> classic = nn.Sequential(dropkit.Dropout(0.2, inverted=False))
        >>> dropkit.revert(classic, strict=True)
        Traceback (most recent call last):
        ValueError: dk.revert(strict=True): module '0' is Dropout(...), which torch cannot ...
    """
    return _walk(module, _dropkit_to_torch(strict), "", {})
