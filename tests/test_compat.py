"""Each shim of `autotimm._compat` against the library it reaches into: a test fails when the library changes."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch.nn as nn

from autotimm._compat import attached_trainer

# ---- tasks / export slice ----------------------------------------------------------------


def test_attached_trainer_reads_what_the_public_property_sets(tmp_path) -> None:
    module = pl.LightningModule()
    with pytest.raises(RuntimeError, match="not attached"):
        _ = module.trainer  # why the shim exists: the public property refuses a detached module
    assert attached_trainer(module) is None
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    module.trainer = trainer
    assert attached_trainer(module) is trainer
    assert attached_trainer(nn.Linear(1, 1)) is None
