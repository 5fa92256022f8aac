"""MetricConfig: building torchmetrics objects with the model's number of classes."""

from __future__ import annotations

import pytest
import torch
import torchmetrics

from autotimm import MetricConfig
from autotimm.metrics import create_metrics


def test_num_classes_is_filled_in_and_metric_computes():
    metric = MetricConfig("accuracy", metric_class="Accuracy", params={"task": "multiclass"}).create(num_classes=4)
    metric.update(torch.eye(4), torch.arange(4))
    assert metric.compute().item() == pytest.approx(1.0)


def test_task_comes_from_the_model_when_not_given():
    auroc = MetricConfig("auroc", metric_class="AUROC").create(num_classes=1, task="binary")
    auroc.update(torch.tensor([0.1, 0.9, 0.8, 0.2]), torch.tensor([0, 1, 1, 0]))
    assert auroc.compute().item() == pytest.approx(1.0)
    multilabel = MetricConfig("f1", metric_class="F1Score").create(num_classes=3, task="multilabel")
    assert multilabel.num_labels == 3


def test_explicit_params_win():
    metric = MetricConfig(
        "top2", metric_class="Accuracy", params={"task": "multiclass", "num_classes": 7, "top_k": 2}
    ).create(num_classes=4)
    assert metric.num_classes == 7 and metric.top_k == 2


def test_unknown_metric_class_suggests_closest():
    with pytest.raises(ValueError, match="'Accuracy'"):
        MetricConfig("acc", metric_class="Acuracy")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stages": ["training"]}, "training"),
        ({"backend": "sklearn"}, "sklearn"),
        ({"name": "val/acc"}, "val/acc"),
    ],
)
def test_bad_config_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetricConfig(**{"name": "acc", "metric_class": "Accuracy", **kwargs})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"prog_bar": "no"}, "Expected `prog_bar` to be True or False, but got str 'no'"),
        ({"prog_bar": 1}, "`prog_bar`.*1"),
        ({"params": "x"}, "Expected `params` to be a dict, but got str 'x'"),
        ({"stages": 5}, "`stages`.*5"),
        ({"name": 5}, "`name`.*5"),
    ],
)
def test_wrong_types_are_named(kwargs, match):
    with pytest.raises(TypeError, match=match):
        MetricConfig(**{"name": "acc", "metric_class": "Accuracy", **kwargs})


def test_a_string_is_not_a_list_of_metrics():
    with pytest.raises(TypeError, match="Expected `metrics` to be a list of MetricConfig.*but got str 'accuracy'"):
        MetricConfig.coerce_list("accuracy")
    with pytest.raises(TypeError, match="entry of `metrics`.*MetricConfig.*int 5"):
        MetricConfig.coerce_list([5])
    with pytest.raises(ValueError, match="'stage'.*'stages'"):
        MetricConfig.coerce_list([{"name": "acc", "stage": ["val"]}])
    assert [
        m.name for m in MetricConfig.coerce_list([{"name": "acc"}, MetricConfig("f1", metric_class="F1Score")])
    ] == [
        "acc",
        "f1",
    ]
    with pytest.raises(TypeError, match="`configs`"):
        create_metrics("accuracy", "val", 3, "multiclass")


def test_bad_params_fail_when_built_with_the_metric_named():
    cfg = MetricConfig("acc", metric_class="Accuracy", params={"task": "multiclass", "averag": "macro"})
    with pytest.raises(ValueError, match="acc"):
        cfg.create(num_classes=3)


def test_custom_backend_accepts_a_metric_class():
    cfg = MetricConfig("mean_pred", backend="custom", metric_class=torchmetrics.MeanMetric, stages=["val"])
    metric = cfg.create()
    metric.update(torch.tensor([1.0, 3.0]))
    assert metric.compute().item() == 2.0
    assert cfg.to_dict()["metric_class"] == "torchmetrics.aggregation.MeanMetric"
    assert MetricConfig.coerce(cfg.to_dict()).metric_cls is torchmetrics.MeanMetric


def test_create_metrics_per_stage_and_unique_names():
    configs = [
        MetricConfig("accuracy", metric_class="Accuracy", stages=["train", "val"]),
        MetricConfig("f1", metric_class="F1Score", stages=["val"]),
    ]
    assert list(create_metrics(configs, "train", 3, "multiclass")) == ["accuracy"]
    assert list(create_metrics(configs, "val", 3, "multiclass")) == ["accuracy", "f1"]
    with pytest.raises(ValueError, match="accuracy"):
        create_metrics(configs + configs[:1], "val", 3, "multiclass")
