"""API conventions (dm_pix style): typed signatures, full docstrings, doctests."""

import doctest
import importlib
import inspect
import pathlib
import pkgutil
import re
import sys
import typing

from absl.testing import absltest
from absl.testing import parameterized

import pel_jax

# The public functions; the public types are the NamedTuples they return.
_TYPES = {
  "ConfusionStats": "confusion_stats",
  "RegionStats": "region_stats",
  "SegmentationMetrics": "segmentation_metrics",
  "WassersteinStats": "wasserstein_stats",
}
_PUBLIC = tuple(
  (name, getattr(pel_jax, name))
  for name in pel_jax.__all__
  if name not in _TYPES
)
_MODULES = (("pel_jax", pel_jax),) + tuple(
  (info.name, importlib.import_module(f"pel_jax.{info.name}"))
  for info in pkgutil.iter_modules(pel_jax.__path__)
)


class ApiTest(parameterized.TestCase):
  def test_all_is_complete_and_callable(self):
    self.assertEqual(
      set(pel_jax.__all__),
      {
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
      },
    )
    self.assertLen(set(pel_jax.__all__), len(pel_jax.__all__))
    for name, fn in _PUBLIC:
      self.assertTrue(callable(fn), name)
      self.assertEqual(fn.__name__, name)

  @parameterized.named_parameters(*_PUBLIC)
  def test_optional_args_are_keyword_only(self, fn):
    # Prefer `f(x, *, axis=-1)` to `f(x, axis=-1)`.
    for param in inspect.signature(fn).parameters.values():
      if param.default is not inspect.Parameter.empty:
        self.assertEqual(
          param.kind,
          inspect.Parameter.KEYWORD_ONLY,
          msg=f"{fn.__name__}({param.name}=...)",
        )
      elif param.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD:
        continue  # Data arguments (predictions, targets, num_classes).
      else:
        self.assertIn(
          param.kind,
          (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD),
          msg=f"{fn.__name__}({param.name})",
        )

  @parameterized.named_parameters(*_PUBLIC)
  def test_data_arguments_come_first(self, fn):
    positional = [
      p.name
      for p in inspect.signature(fn).parameters.values()
      if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    first = {
      pel_jax.accumulated_value_and_grad: "stats_fn",
      pel_jax.check_labels: "targets",
      pel_jax.deep_supervision_loss: "heads",
      pel_jax.distance_transform: "mask",
      pel_jax.global_sum: "x",
      pel_jax.head_loss: "features",
      pel_jax.head_stats: "features",
      pel_jax.loss_from_stats: "stats",
      pel_jax.mcc_loss_from_stats: "stats",
      pel_jax.generalized_wasserstein_dice_loss_from_stats: "stats",
      pel_jax.segmentation_metrics: "stats",
      pel_jax.signed_distance: "mask",
    }
    self.assertEqual(positional[0], first.get(fn, "predictions"))

  @parameterized.named_parameters(*_PUBLIC)
  def test_has_docstring(self, fn):
    self.assertTrue(fn.__doc__ and fn.__doc__.strip(), fn.__name__)

  @parameterized.named_parameters(*_PUBLIC)
  def test_signature_is_typed(self, fn):
    # get_type_hints also proves that every annotation resolves.
    hints = typing.get_type_hints(fn)
    for name in inspect.signature(fn).parameters:
      self.assertIn(name, hints, msg=f"{fn.__name__}({name}) has no type")
    self.assertIn("return", hints, msg=f"{fn.__name__} has no return type")

  @parameterized.named_parameters(*_PUBLIC)
  def test_docstring_is_complete(self, fn):
    # Functions: Args (every parameter, in order), Returns, Examples. Classes
    # (e.g. a result NamedTuple): Attributes or Args for the fields, Examples.
    doc = inspect.getdoc(fn)
    sections = [
      line for line in doc.splitlines() if re.fullmatch(r"[A-Z][a-z]+:", line)
    ]
    if inspect.isclass(fn):
      fields = "Attributes:" if "Attributes:" in sections else "Args:"
      wanted = [fields, "Examples:"]
    else:
      fields, wanted = "Args:", ["Args:", "Returns:", "Examples:"]
    self.assertEqual(
      [s for s in sections if s in wanted],
      wanted,
      msg=f"{fn.__name__}: sections {sections}",
    )
    body = doc.split(f"\n{fields}\n")[1]
    following = sections[sections.index(fields) + 1 :]
    if following:
      body = body.split(f"\n{following[0]}\n")[0]
    documented = re.findall(r"^  (\**\w+):", body, re.MULTILINE)
    wanted = [
      ("**" if p.kind == inspect.Parameter.VAR_KEYWORD else "") + name
      for name, p in inspect.signature(fn).parameters.items()
    ]
    self.assertEqual(documented, wanted, msg=f"{fn.__name__}: {fields}")
    examples = doc.split("\nExamples:\n")[1]
    self.assertIn(">>> ", examples, msg=f"{fn.__name__}: no runnable example")

  def test_variant_signatures_follow_pel_loss(self):
    # The variants spell out pel_loss's keywords (minus the settings they
    # fix): a keyword added to pel_loss must be added to them, same default
    # and type.
    base = inspect.signature(pel_jax.pel_loss).parameters
    fixed = {
      "dice_loss": {"exponent", "scale", "fp_weight", "fn_weight"},
      "jaccard_loss": {"exponent", "scale", "fp_weight", "fn_weight"},
      "tversky_loss": {"exponent", "scale"},
    }
    redefault = {"fp_weight": 0.3, "fn_weight": 0.7}
    for name, gone in fixed.items():
      params = inspect.signature(getattr(pel_jax, name)).parameters
      want = [
        p.replace(default=redefault.get(p.name, p.default))
        if name == "tversky_loss"
        else p
        for p in base.values()
        if p.name not in gone
      ]
      self.assertEqual(list(params.values()), want, name)
      self.assertEqual(
        inspect.signature(getattr(pel_jax, name)).return_annotation,
        inspect.signature(pel_jax.pel_loss).return_annotation,
        name,
      )

  def test_reference_lists_every_public_name(self):
    # docs/api.rst groups the names by hand: a new public name must join it.
    api = (pathlib.Path(__file__).parents[1] / "docs" / "api.rst").read_text()
    listed = re.findall(r"^\.\. autofunction:: (\w+)$", api, re.MULTILINE)
    self.assertCountEqual(listed, [name for name, _ in _PUBLIC])
    types = re.findall(r"^\.\. autoclass:: (\w+)$", api, re.MULTILINE)
    self.assertCountEqual(types, _TYPES)

  def test_one_version_everywhere(self):
    # The wheel and the docs read `__version__`; the citation and the
    # changelog's newest heading must say the same.
    root = pathlib.Path(__file__).parents[1]
    cff = (root / "CITATION.cff").read_text()
    changelog = (root / "CHANGELOG.md").read_text()
    self.assertEqual(
      re.search(r"^version: (\S+)$", cff, re.MULTILINE)[1], pel_jax.__version__
    )
    self.assertEqual(
      re.search(r"^## .*?(\d+\.\d+\.\d+)", changelog, re.MULTILINE)[1],
      pel_jax.__version__,
    )

  @parameterized.named_parameters(*((t, t, f) for t, f in _TYPES.items()))
  def test_public_types_are_returned_named_tuples(self, name, function):
    # Exported so that annotations and isinstance checks can name them.
    cls = getattr(pel_jax, name)
    self.assertTrue(issubclass(cls, tuple) and cls._fields)
    self.assertTrue(cls.__doc__ and cls.__doc__.strip())
    hints = typing.get_type_hints(getattr(pel_jax, function))
    self.assertIs(hints["return"], cls)

  @parameterized.named_parameters(*_MODULES)
  def test_module_doctests(self, module):
    # Every docstring example of the package runs, public or private.
    result = doctest.testmod(
      module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    self.assertEqual(result.failed, 0, module.__name__)

  def test_every_public_example_ran(self):
    # The module sweep above reaches each public function's examples: each is
    # defined in one of the swept modules, not only re-exported.
    swept = {m.__name__ for _, m in _MODULES}
    for name, fn in _PUBLIC:
      self.assertIn(fn.__module__, swept, name)
      tests = doctest.DocTestFinder().find(sys.modules[fn.__module__])
      self.assertTrue(
        any(t.name.endswith("." + name) and t.examples for t in tests), name
      )


if __name__ == "__main__":
  absltest.main()
