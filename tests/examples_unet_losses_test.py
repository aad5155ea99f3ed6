"""Tests of examples/unet/losses.py: the --loss spec."""

import pytest

from examples.unet import losses


def test_parse_loss():
  assert losses.parse_loss("pel+0.5*ce") == ((1.0, "pel"), (0.5, "ce"))
  with pytest.raises(ValueError, match="bad --loss term 'focal'"):
    losses.parse_loss("dice+focal")
  for bad in ("-1*pel+ce", "1e999*dice", "nan*ce", "0*ce", "1.2.3*pel"):
    with pytest.raises(ValueError, match="finite number > 0"):
      losses.parse_loss(bad)
