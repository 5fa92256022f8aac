"""Loggers by name."""

from __future__ import annotations

import pytest
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from autotimm import LoggerConfig, LoggerManager, LoggingConfig
from autotimm.loggers import list_loggers, resolve_loggers


def test_logger_configs_build_with_the_default_save_dir(tmp_path):
    loggers = LoggerManager([LoggerConfig("tensorboard"), LoggerConfig("CSV", {"name": "csv_run"})]).build(tmp_path)
    assert isinstance(loggers[0], TensorBoardLogger) and isinstance(loggers[1], CSVLogger)
    assert loggers[0].save_dir == str(tmp_path)
    assert loggers[1].name == "csv_run"


def test_unknown_backend_suggests_closest():
    with pytest.raises(ValueError, match="tensorboard"):
        LoggerConfig("tensorbord")


def test_unknown_parameter_is_named_for_strict_loggers():
    with pytest.raises(ValueError, match="flush_every"):
        LoggerConfig("csv", {"flush_every": 5})


def test_resolve_accepts_the_documented_forms(tmp_path):
    assert resolve_loggers(False, tmp_path) is False
    assert isinstance(resolve_loggers([LoggerConfig("csv")], tmp_path)[0], CSVLogger)
    assert isinstance(resolve_loggers(LoggerConfig("csv"), tmp_path)[0], CSVLogger)
    ready = CSVLogger(tmp_path)
    assert resolve_loggers(ready, tmp_path) is ready
    with pytest.raises(TypeError, match="logger"):
        resolve_loggers("tensorboard", tmp_path)


def test_list_loggers():
    assert list_loggers() == ["csv", "tensorboard", "wandb"]


def test_logging_config_coerce():
    assert LoggingConfig.coerce(None) == LoggingConfig()
    assert LoggingConfig.coerce({"log_gradient_norm": True}).log_gradient_norm
    with pytest.raises(TypeError):
        LoggingConfig.coerce("yes")


@pytest.mark.parametrize(
    "build, error, match",
    [
        (
            lambda: LoggingConfig(log_learning_rate="no"),
            TypeError,
            "Expected `log_learning_rate` to be True or False, but got str 'no'",
        ),
        (lambda: LoggingConfig(log_gradient_norm=1), TypeError, "`log_gradient_norm`.*1"),
        (lambda: LoggingConfig.coerce({"log_lr": True}), ValueError, "'log_learning_rate'.*but got 'log_lr'"),
        (
            lambda: LoggerManager("csv"),
            TypeError,
            "Expected `configs` to be a list of LoggerConfig or Lightning Logger, but got str 'csv'",
        ),
        (lambda: LoggerManager(["csv"]), TypeError, "entry of `configs`.*'csv'"),
        (lambda: LoggerConfig(5), TypeError, "`backend`.*5"),
        (lambda: LoggerConfig("csv", params="x"), TypeError, "Expected `params` to be a dict, but got str 'x'"),
    ],
)
def test_bad_arguments_are_named(build, error, match):
    with pytest.raises(error, match=match):
        build()
