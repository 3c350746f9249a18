import pytest
import torch

from anchoropt.errors import ConfigError
from anchoropt.method.scoring import combine_logits, needs_anchor_logits, scoring_rule, seen_mask_for

NORMAL = torch.tensor([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.0, 5.0, 2.0]])
ANCHOR = torch.tensor([[3.0, 0.0, 1.0, 0.0], [1.0, 4.0, -1.0, 6.0]])


def test_auto_decides_per_evaluation_set_not_per_class():
    trained_set = torch.ones(4, dtype=torch.bool)
    assert torch.equal(combine_logits(NORMAL, ANCHOR, trained_set), NORMAL)  # base test, DG variants
    assert scoring_rule(trained_set) == "normal"
    for mixed in (torch.tensor([True, False, True, False]), torch.zeros(4, dtype=torch.bool)):
        # new / all / cross-dataset: every class, even a trained name, gets the ensemble
        assert torch.equal(combine_logits(NORMAL, ANCHOR, mixed), (NORMAL + ANCHOR) / 2)
        assert scoring_rule(mixed) == "ensemble"


def test_per_class_uses_normal_for_seen_and_average_for_unseen_classes():
    seen = torch.tensor([True, False, True, False])
    combined = combine_logits(NORMAL, ANCHOR, seen, "per_class")
    assert scoring_rule(seen, "per_class") == "per_class"
    for row in range(2):
        for col in range(4):
            expected = NORMAL[row, col] if seen[col] else (NORMAL[row, col] + ANCHOR[row, col]) / 2
            assert combined[row, col] == expected


def test_forced_modes_apply_one_rule_to_all_classes():
    seen = torch.tensor([True, False, True, False])
    assert torch.equal(combine_logits(NORMAL, ANCHOR, seen, "normal"), NORMAL)
    assert torch.equal(combine_logits(NORMAL, ANCHOR, seen, "anchor"), ANCHOR)
    assert torch.equal(combine_logits(NORMAL, ANCHOR, seen, "ensemble"), (NORMAL + ANCHOR) / 2)


def test_anchor_logits_only_needed_when_read():
    all_seen, some_unseen = torch.ones(4, dtype=torch.bool), torch.tensor([True, True, False, True])
    assert not needs_anchor_logits(all_seen)
    assert needs_anchor_logits(some_unseen)
    assert not needs_anchor_logits(some_unseen, "normal")
    assert needs_anchor_logits(all_seen, "ensemble")
    assert not needs_anchor_logits(all_seen, "per_class")
    assert torch.equal(combine_logits(NORMAL, None, all_seen), NORMAL)
    assert torch.equal(combine_logits(NORMAL, None, all_seen, "per_class"), NORMAL)
    with pytest.raises(ValueError, match="anchor logits"):
        combine_logits(NORMAL, None, some_unseen)


def test_seen_mask_matches_names_tolerantly():
    trained = ["american_bulldog", "Sea Lake", "  Apply_Eye_Makeup "]
    classes = ["American Bulldog", "sea_lake", "beagle", "apply eye makeup", "sea"]
    assert seen_mask_for(classes, trained).tolist() == [True, True, False, True, False]


def test_mask_shape_and_mode_are_checked():
    with pytest.raises(ValueError, match="one entry per class"):
        combine_logits(NORMAL, ANCHOR, torch.tensor([True, False]))
    with pytest.raises(ConfigError, match="SCORING_MODE.*mean"):
        combine_logits(NORMAL, ANCHOR, torch.ones(4, dtype=torch.bool), "mean")
