"""pel_jax: the PointWise Exponential Loss (PEL) and the Dice family in JAX.

Modules with a leading underscore are private; use the names exported here.
"""

from pel_jax._accumulate import accumulated_value_and_grad
from pel_jax._boundary import boundary_loss
from pel_jax._cldice import cldice_loss
from pel_jax._cldice import soft_dice_cldice_loss
from pel_jax._core import RegionStats
from pel_jax._distance import distance_transform
from pel_jax._distance import signed_distance
from pel_jax._hausdorff import hausdorff_dt_loss
from pel_jax._loss import check_labels
from pel_jax._loss import global_sum
from pel_jax._loss import loss_from_stats
from pel_jax._loss import pel_loss
from pel_jax._loss import region_stats
from pel_jax._loss import weight_map
from pel_jax._lovasz import lovasz_hinge_loss
from pel_jax._lovasz import lovasz_softmax_loss
from pel_jax._metrics import ConfusionStats
from pel_jax._metrics import SegmentationMetrics
from pel_jax._metrics import confusion_stats
from pel_jax._metrics import segmentation_metrics
from pel_jax._variants import dice_loss
from pel_jax._variants import jaccard_loss
from pel_jax._variants import tversky_loss

__version__ = "0.3.0"

__all__ = (
  "ConfusionStats",
  "RegionStats",
  "SegmentationMetrics",
  "accumulated_value_and_grad",
  "boundary_loss",
  "check_labels",
  "cldice_loss",
  "confusion_stats",
  "dice_loss",
  "distance_transform",
  "global_sum",
  "hausdorff_dt_loss",
  "jaccard_loss",
  "loss_from_stats",
  "lovasz_hinge_loss",
  "lovasz_softmax_loss",
  "pel_loss",
  "region_stats",
  "segmentation_metrics",
  "signed_distance",
  "soft_dice_cldice_loss",
  "tversky_loss",
  "weight_map",
)
