"""What a loss does to the gradient, and what the labels hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.experimental import checkify
import jax.numpy as jnp
from jax.typing import ArrayLike

from pel_jax import _checks
from pel_jax._loss import pel_loss


def weight_map(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  loss_fn: Callable[..., jax.Array] | None = None,
  **loss_kwargs: Any,
) -> jax.Array:
  r"""Per-pixel gradient weight of a PEL-family loss, `[B, *spatial]`.

  The absolute gradient of the (reduced, summed) loss with respect to
  ``predictions`` (probabilities, or logits with ``from_logits=True``),
  summed over the class axis: :math:`\sum_c |\partial L / \partial x_c|`.
  It shows which pixels pull on the model, the diagnostic the PEL authors
  plot next to the deviation map :math:`|p - g|`.

  Args:
    predictions: as in `pel_loss`.
    targets: as in `pel_loss`.
    loss_fn: the loss to differentiate, `pel_loss` by default (e.g.
      `pel_jax.dice_loss` for the Dice map to compare with).
    **loss_kwargs: any keyword of `pel_loss` (``exponent``, ``scale``, ...).

  Returns:
    Float array of shape `[B, *spatial]` in the dtype of ``predictions``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import dice_loss, weight_map
    >>> logits = jnp.zeros((2, 8, 8, 3))
    >>> ids = jnp.zeros((2, 8, 8), jnp.int32)
    >>> weight_map(logits, ids, from_logits=True, exponent=2.0).shape
    (2, 8, 8)
    >>> weight_map(logits, ids, loss_fn=dice_loss, from_logits=True).shape
    (2, 8, 8)
  """
  loss_fn = pel_loss if loss_fn is None else loss_fn
  grad = jax.grad(lambda x: jnp.sum(loss_fn(x, targets, **loss_kwargs)))(
    jnp.asarray(predictions)
  )
  return jnp.sum(jnp.abs(grad), axis=-1)


def check_labels(
  targets: ArrayLike, num_classes: int, *, ignore_index: int | None = None
) -> None:
  """Checks that integer class ids are valid for `num_classes` classes.

  Valid ids are `[0, num_classes)` and ``ignore_index``; for
  ``num_classes=1`` (one channel, the binary mode of `pel_loss`) they are 0
  (background) and 1 (foreground). Out-of-range ids never corrupt `pel_loss`
  (they match no class: background for every class), but they usually mean
  a data bug. Eagerly this raises `checkify.JaxRuntimeError`; inside
  `jax.jit`, wrap the caller with `jax.experimental.checkify.checkify` and
  call `err.throw()` (see the README). The comparisons never overflow the
  ids' dtype (uint8 ids are checked against 300 classes exactly).

  Args:
    targets: integer class ids, any shape (e.g. `[B, *spatial]`).
    num_classes: C, the number of classes (1: binary ids 0 and 1).
    ignore_index: an id allowed besides the valid ones.

  Returns:
    None: the outcome is the error, raised eagerly or carried by checkify.

  Raises:
    TypeError: for non-integer ``targets``.
    ValueError: for ``num_classes`` < 1, or an ``ignore_index`` the dtype
      of ``targets`` cannot hold (as `pel_loss` does).

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jax.experimental import checkify
    >>> from pel_jax import check_labels
    >>> check_labels(jnp.array([[0, 2, 255]]), 3, ignore_index=255)
    >>> check = jax.jit(lambda t: check_labels(t, 3))
    >>> err, _ = checkify.checkify(check)(jnp.array([[0, 3]]))
    >>> print(err.get())
    targets hold a class id outside [0, 3): 3 at flat index 1 (`check` failed)
  """
  targets = jnp.asarray(targets)
  count = _checks.check_label_args(targets, num_classes, ignore_index)
  if targets.size == 0:
    return  # Nothing to check (and argmin of an empty array raises).
  # Bounds the dtype cannot exceed are left out rather than written in it:
  # 300 as uint8 would wrap to 44.
  info = jnp.iinfo(targets.dtype)
  valid = jnp.ones(targets.shape, bool) if info.min >= 0 else targets >= 0
  if count <= info.max:
    valid = valid & (targets < count)
  if ignore_index is not None:
    valid = valid | (targets == ignore_index)
  bad = jnp.argmin(valid.reshape(-1))
  # Format arguments must be arrays: the static class count goes in the text
  # (with its braces doubled, as checkify formats the message).
  allowed = f"[0, {count})"
  if num_classes == 1:
    allowed = "{{0, 1}} (one class: binary, 1 = foreground)"
  checkify.check(
    jnp.all(valid),
    f"targets hold a class id outside {allowed}: {{value}} at flat index {{i}}",
    value=targets.reshape(-1)[bad],
    i=bad,
  )
