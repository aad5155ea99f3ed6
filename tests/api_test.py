"""API conventions (dm_pix style) and the runnable docstring example."""

import doctest
import inspect

from absl.testing import absltest
from absl.testing import parameterized

import pel_jax
from pel_jax import _loss

_PUBLIC = tuple((name, getattr(pel_jax, name)) for name in pel_jax.__all__
                if not isinstance(getattr(pel_jax, name), type))  # Functions.


class ApiTest(parameterized.TestCase):

  def test_all_is_complete_and_callable(self):
    self.assertEqual(
        set(pel_jax.__all__),
        {"RegionStats", "accumulated_value_and_grad", "check_labels",
         "dice_loss", "global_sum", "jaccard_loss", "loss_from_stats",
         "pel_loss", "region_stats", "tversky_loss", "weight_map"})
    self.assertLen(set(pel_jax.__all__), len(pel_jax.__all__))
    for name, fn in _PUBLIC:
      self.assertTrue(callable(fn), name)
      self.assertEqual(fn.__name__, name)

  @parameterized.named_parameters(*_PUBLIC)
  def test_optional_args_are_keyword_only(self, fn):
    # Prefer `f(x, *, axis=-1)` to `f(x, axis=-1)`.
    for param in inspect.signature(fn).parameters.values():
      if param.default is not inspect.Parameter.empty:
        self.assertEqual(param.kind, inspect.Parameter.KEYWORD_ONLY,
                         msg=f"{fn.__name__}({param.name}=...)")
      elif param.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD:
        continue  # Data arguments (predictions, targets, num_classes).
      else:
        self.assertIn(param.kind, (inspect.Parameter.KEYWORD_ONLY,
                                   inspect.Parameter.VAR_KEYWORD),
                      msg=f"{fn.__name__}({param.name})")

  @parameterized.named_parameters(*_PUBLIC)
  def test_data_arguments_come_first(self, fn):
    positional = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD]
    first = {pel_jax.check_labels: "targets", pel_jax.global_sum: "x",
             pel_jax.accumulated_value_and_grad: "stats_fn",
             pel_jax.loss_from_stats: "stats"}
    self.assertEqual(positional[0], first.get(fn, "predictions"))

  @parameterized.named_parameters(*_PUBLIC)
  def test_has_docstring(self, fn):
    self.assertTrue(fn.__doc__ and fn.__doc__.strip(), fn.__name__)

  @parameterized.named_parameters(
      ("pel_loss", pel_jax.pel_loss), ("weight_map", pel_jax.weight_map))
  def test_docstring_sections(self, fn):
    doc = inspect.getdoc(fn)
    self.assertIn("\nArgs:\n", doc)
    self.assertIn("\nReturns:\n", doc)
    for name, param in inspect.signature(fn).parameters.items():
      if param.kind == inspect.Parameter.VAR_KEYWORD:
        name = "**" + name
      self.assertIn(f"  {name}:", doc, msg=f"{fn.__name__}: {name}")

  def test_variant_signatures_follow_pel_loss(self):
    base = inspect.signature(pel_jax.pel_loss).parameters
    fixed = {
        "dice_loss": {"exponent", "scale", "fp_weight", "fn_weight"},
        "jaccard_loss": {"exponent", "scale", "fp_weight", "fn_weight"},
        "tversky_loss": {"exponent", "scale"},
    }
    for name, gone in fixed.items():
      params = inspect.signature(getattr(pel_jax, name)).parameters
      self.assertEqual(set(params), set(base) - gone, name)
    tversky = inspect.signature(pel_jax.tversky_loss).parameters
    self.assertEqual(tversky["fp_weight"].default, 0.3)
    self.assertEqual(tversky["fn_weight"].default, 0.7)

  def test_docstring_example_runs(self):
    finder = doctest.DocTestFinder()
    tests = [t for t in finder.find(_loss.pel_loss, "pel_loss",
                                    globs={}) if t.examples]
    self.assertNotEmpty(tests)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
      runner.run(test)
    result = runner.summarize(verbose=False)
    self.assertGreater(result.attempted, 0)
    self.assertEqual(result.failed, 0)

  def test_module_doctests(self):
    result = doctest.testmod(_loss, optionflags=doctest.ELLIPSIS)
    self.assertGreater(result.attempted, 0)
    self.assertEqual(result.failed, 0)


if __name__ == "__main__":
  absltest.main()
