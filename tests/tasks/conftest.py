"""Trained tiny models shared by the inference tests (test_predict.py, test_pretrained.py), trained once."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import trained_classifier, trained_detector


@pytest.fixture(scope="session")
def classifier_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The best checkpoint of a 3-colour classifier (classes blue, green, red); see `helpers.trained_classifier`."""
    return trained_classifier(tmp_path_factory.mktemp("classifier"))


@pytest.fixture(scope="session")
def detector_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The best checkpoint of a detector of 64 px shapes, its data in `<root>/coco`; see `helpers.trained_detector`."""
    return trained_detector(tmp_path_factory.mktemp("detector"))
