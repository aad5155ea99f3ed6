"""pel_jax: the PointWise Exponential Loss (PEL) and the Dice family in JAX.

Modules with a leading underscore are private; use the names exported here.
"""

from pel_jax._accumulate import accumulated_value_and_grad
from pel_jax._boundary import boundary_loss
from pel_jax._cldice import cldice_loss
from pel_jax._cldice import soft_dice_cldice_loss
from pel_jax._cross_entropy import cross_entropy
from pel_jax._diagnostics import check_labels
from pel_jax._diagnostics import weight_map
from pel_jax._distance import distance_transform
from pel_jax._distance import signed_distance
from pel_jax._focal import focal_cross_entropy
from pel_jax._global_sum import global_sum
from pel_jax._gwdl import WassersteinStats
from pel_jax._gwdl import generalized_wasserstein_dice_loss
from pel_jax._gwdl import generalized_wasserstein_dice_loss_from_stats
from pel_jax._gwdl import wasserstein_stats
from pel_jax._hausdorff import hausdorff_dt_loss
from pel_jax._head import deep_supervision_loss
from pel_jax._head import head_loss
from pel_jax._head import head_stats
from pel_jax._loss import pel_loss
from pel_jax._lovasz import lovasz_hinge_loss
from pel_jax._lovasz import lovasz_softmax_loss
from pel_jax._mcc import mcc_loss
from pel_jax._mcc import mcc_loss_from_stats
from pel_jax._metrics import ConfusionStats
from pel_jax._metrics import SegmentationMetrics
from pel_jax._metrics import confusion_stats
from pel_jax._metrics import segmentation_metrics
from pel_jax._region_stats import loss_from_stats
from pel_jax._region_stats import region_stats
from pel_jax._sums import RegionStats
from pel_jax._surface import average_surface_distance
from pel_jax._surface import hausdorff_distance
from pel_jax._surface import surface_dice
from pel_jax._unified_focal import unified_focal_loss
from pel_jax._variants import dice_loss
from pel_jax._variants import jaccard_loss
from pel_jax._variants import tversky_loss

__version__ = "0.3.0"

__all__ = (
  "ConfusionStats",
  "RegionStats",
  "SegmentationMetrics",
  "WassersteinStats",
  "accumulated_value_and_grad",
  "average_surface_distance",
  "boundary_loss",
  "check_labels",
  "cldice_loss",
  "confusion_stats",
  "cross_entropy",
  "deep_supervision_loss",
  "dice_loss",
  "distance_transform",
  "focal_cross_entropy",
  "generalized_wasserstein_dice_loss",
  "generalized_wasserstein_dice_loss_from_stats",
  "global_sum",
  "hausdorff_distance",
  "hausdorff_dt_loss",
  "head_loss",
  "head_stats",
  "jaccard_loss",
  "loss_from_stats",
  "lovasz_hinge_loss",
  "lovasz_softmax_loss",
  "mcc_loss",
  "mcc_loss_from_stats",
  "pel_loss",
  "region_stats",
  "segmentation_metrics",
  "signed_distance",
  "soft_dice_cldice_loss",
  "surface_dice",
  "tversky_loss",
  "unified_focal_loss",
  "wasserstein_stats",
  "weight_map",
)
