"""A schedule that cannot run as planned says so at the start, and ``--resume RUN/stable`` says why there is no
stable checkpoint (``--preset tiny --max-steps 30`` was all warm-up, silently)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gpt2_core.errors import UserError
from gpt2_train.trainer import Trainer

from .conftest import CountingSource, small_config, small_model


def test_an_all_warm_up_run_warns_and_resuming_its_stable_checkpoint_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = small_config(tmp_path, lr_schedule="wsd", warmup_steps=8, max_steps=8)
    Trainer(cfg, model=small_model(), train_source=CountingSource()).fit()
    err = capsys.readouterr().err
    assert "; optimizer adamw, lr 0.01 wsd (warm-up 8 steps, decay from step 8)" in err  # the start line
    assert (
        "warning: --warmup-steps 8 >= the run's 8 steps: the whole run is warm-up, its learning rate never "
        "reaches --lr; a wsd run writes no RUN_DIR/stable checkpoint (give more --max-steps or fewer "
        "--warmup-steps)"
    ) in err
    assert not (tmp_path / "stable").exists()
    with pytest.raises(UserError, match=r"/stable: no stable checkpoint: only a --lr-schedule wsd run whose"):
        resumed = small_config(tmp_path, lr_schedule="wsd", max_steps=16, resume=str(tmp_path / "stable"))
        Trainer(resumed, model=small_model(), train_source=CountingSource()).fit()


def test_a_schedule_that_fits_does_not_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Trainer(small_config(tmp_path), model=small_model(), train_source=CountingSource()).fit()
    err = capsys.readouterr().err
    assert "; optimizer adamw, lr 0.01 cosine (warm-up 2 steps)" in err and "warning" not in err
