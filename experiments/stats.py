"""Small statistics without scipy: Student t quantiles and paired CIs.

The t quantile comes from bisection on the t CDF, written with the
regularized incomplete beta function (Lentz's continued fraction).
"""

from __future__ import annotations

import math

import numpy as np


def betainc(a: float, b: float, x: float) -> float:
  """Regularized incomplete beta I_x(a, b) for a, b > 0, 0 <= x <= 1."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  if x > (a + 1) / (a + b + 2):  # the fraction converges fast on this side
    return 1.0 - betainc(b, a, 1.0 - x)
  log_front = (
    math.lgamma(a + b)
    - math.lgamma(a)
    - math.lgamma(b)
    + a * math.log(x)
    + b * math.log1p(-x)
  )
  tiny, eps = 1e-300, 1e-15
  c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
  d = 1.0 / (d if abs(d) > tiny else tiny)
  f = d
  for m in range(1, 500):
    for num in (
      m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
      -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
    ):
      d = 1.0 + num * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + num / c
      c = c if abs(c) > tiny else tiny
      f *= c * d
    if abs(c * d - 1.0) < eps:
      break
  return math.exp(log_front) * f / a


def t_cdf(t: float, df: float) -> float:
  """CDF of Student's t with `df` degrees of freedom."""
  tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
  return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, df: float) -> float:
  """The q-quantile of Student's t (bisection on `t_cdf`, |error| < 1e-10)."""
  if not 0.0 < q < 1.0:
    raise ValueError(f"q must be in (0, 1), got {q}")
  if q < 0.5:
    return -t_quantile(1.0 - q, df)
  lo, hi = 0.0, 1.0
  while t_cdf(hi, df) < q:
    hi *= 2.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if t_cdf(mid, df) < q:
      lo = mid
    else:
      hi = mid
    if hi - lo < 1e-10:
      break
  return 0.5 * (lo + hi)


def paired_ci(treatment, control, level: float = 0.95) -> dict:
  """Mean paired difference `treatment - control` and its t interval.

  Pairs are matched by position (seed k of both arms). With one pair the
  interval is undefined (NaN half-width).
  """
  d = np.asarray(treatment, float) - np.asarray(control, float)
  n = d.size
  mean = float(d.mean())
  if n < 2:
    return {
      "mean": mean,
      "sd": float("nan"),
      "n": n,
      "lo": float("nan"),
      "hi": float("nan"),
      "half_width": float("nan"),
    }
  sd = float(d.std(ddof=1))
  half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
  return {
    "mean": mean,
    "sd": sd,
    "n": n,
    "lo": mean - half,
    "hi": mean + half,
    "half_width": half,
  }
