"""Small, real demo data sets written to disk once and reused, for examples, tests and benchmarks."""

from autotimm.data.demo.coco_shapes import DIFFICULTIES, Difficulty, make_coco_shapes
from autotimm.data.demo.digits import make_digits_folder

__all__ = ["DIFFICULTIES", "Difficulty", "make_coco_shapes", "make_digits_folder"]
