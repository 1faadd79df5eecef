"""The one decision rule: calibration, levels, guard flags and what a checkpoint lacks."""

from __future__ import annotations

import math

import pytest

from fracturescan.decision import (ABNORMAL, DOUBT, NORMAL, DecisionRule, decide_study, level_of,
                                   study_probability)
from fracturescan.evaluation.operating import DecisionPoints
from fracturescan.evaluation.temperature import Calibration
from fracturescan.guard import GUARD_MESSAGE, GuardInfo
from fracturescan.models.checkpoint import CheckpointMetadata

CAL = Calibration(2.0, "test", 10, 5, 4, 0.7, 0.6)
POINTS = DecisionPoints(0.3, 0.7, 0.95, 0.95, 0.96, 0.5, 0.6, 0.97, 30, 30, True, "test")
GUARD = GuardInfo("abc", ("features.norm5",), 4.0, 0.95, 0.96, 100, 50, "test", 64)


def _sigmoid(z: float, t: float = 1.0) -> float:
    return 1 / (1 + math.exp(-z / t))


def test_levels_follow_the_two_cuts() -> None:
    assert [level_of(p, POINTS) for p in (0.0, 0.29, 0.3, 0.5, 0.69, 0.7, 1.0)] == \
        [NORMAL, NORMAL, DOUBT, DOUBT, DOUBT, ABNORMAL, ABNORMAL]
    assert study_probability([0.2, None, 0.6]) == pytest.approx(0.4)
    assert study_probability([None]) is None


def test_study_uses_calibrated_probabilities_and_leaves_flagged_images_out() -> None:
    rule = DecisionRule(0.5, CAL, POINTS, GUARD)
    logits = [1.0, -1.0, 6.0, None]
    out = decide_study(rule, logits, names=["a", "b", "c", "d"], guard_scores=[1.0, 3.9, 9.0, None],
                       header_flags=[None, ["Modality is MR, not CR/DX"], None, None], errors=[None, None, None, "bad"])
    a, b, c, d = out.images
    assert a.probability == pytest.approx(_sigmoid(1.0, 2.0)) and a.used and a.in_distribution
    assert b.flags == ("Modality is MR, not CR/DX",) and not b.used and b.in_distribution
    assert c.flags == (GUARD_MESSAGE,) and c.in_distribution is False and not c.used
    assert d.error == "bad" and d.probability is None
    assert out.probability == pytest.approx(_sigmoid(1.0, 2.0))  # only image a counts
    assert out.level == level_of(out.probability, POINTS) == DOUBT
    assert out.abnormal is True and out.calibrated and out.missing == ()
    assert any("2 of 4 image(s) flagged" in n for n in out.notes)
    insisted = decide_study(rule, logits, guard_scores=[1.0, 3.9, 9.0, None],
                            header_flags=[None, ["x"], None, None], include_flagged=True)
    expected = (_sigmoid(1.0, 2.0) + _sigmoid(-1.0, 2.0) + _sigmoid(6.0, 2.0)) / 3
    assert insisted.probability == pytest.approx(expected) and insisted.level == DOUBT


def test_all_flagged_gives_no_study_result() -> None:
    out = decide_study(DecisionRule(0.5, guard=GUARD), [3.0], guard_scores=[10.0])
    assert out.probability is None and out.level is None and out.abnormal is None
    assert any("every readable image was flagged" in n for n in out.notes)


def test_an_old_checkpoint_says_what_it_lacks() -> None:
    rule = DecisionRule.from_metadata(CheckpointMetadata(threshold=0.4))
    assert rule.missing == ("calibration", "operating points", "input guard")
    out = decide_study(rule, [0.0])
    assert out.probability == 0.5 and out.abnormal and out.level is None and not out.calibrated
    assert len([n for n in out.notes if n.startswith("no ")]) == 3


def test_rule_round_trips_through_metadata_and_keeps_reasons() -> None:
    meta = CheckpointMetadata(threshold=0.6, calibration=CAL.to_dict(), decision_points=POINTS.to_dict(),
                              guard={"unavailable": "only 3 hold-out images"}, body_parts=("XR_WRIST",))
    rule = DecisionRule.from_metadata(meta, threshold=0.55)
    assert rule.calibration == CAL and rule.points == POINTS and rule.guard is None
    assert rule.threshold == 0.55 and rule.body_parts == ("XR_WRIST",)
    assert rule.missing == ("input guard",)
    assert "only 3 hold-out images" in rule.missing_notes()[0]
