"""TrainerConfig is parsed at the edge: bad keys and values name themselves."""
import json

import pytest

from harness.errors import ConfigError
from trainers.config import Mode, Quantize, TrainerConfig, from_dict, load, save


def test_round_trip_through_json(tmp_path):
    cfg = TrainerConfig(mode=Mode.DDP, learners=4, quantize=Quantize.INT8, seed=7)
    path = tmp_path / "config.json"
    save(cfg, path)
    assert json.loads(path.read_text())["mode"] == "ddp"
    assert load(path) == cfg


def test_synchronous_modes_wait_for_every_learner():
    assert TrainerConfig(mode=Mode.DECOUPLED, learners=4, quorum=1).effective_quorum == 1
    assert TrainerConfig(mode=Mode.DECOUPLED, learners=4, quorum=0).effective_quorum == 4
    assert TrainerConfig(mode=Mode.DILOCO, learners=4, quorum=1).effective_quorum == 4
    assert TrainerConfig(mode=Mode.DDP, learners=3, quorum=1).effective_quorum == 3


def test_ints_are_accepted_for_floats():
    assert from_dict({"inner_lr": 1}).inner_lr == 1.0


@pytest.mark.parametrize("data, key, fragment", [
    ({"colour": "red"}, "colour", "unknown key"),
    ({"mode": "async"}, "mode", "must be one of decoupled, diloco, ddp"),
    ({"learners": 0}, "learners", "at least 1"),
    ({"quorum": 3, "learners": 2}, "quorum", "between 0 and learners"),
    ({"inner_lr": "fast"}, "inner_lr", "must be float"),
    ({"elastic": 1}, "elastic", "must be bool"),
    ({"preset": "huge"}, "preset", "tiny, small, medium"),
    ({"grace_gamma": 1.5}, "grace_gamma", "[0, 1)"),
])
def test_bad_values_name_file_key_and_value(data, key, fragment):
    with pytest.raises(ConfigError) as err:
        from_dict(data, source="scenario.yaml")
    text = str(err.value)
    assert text.startswith(f"scenario.yaml: {key}: ")
    assert fragment in text
    assert "\n" not in text
    assert err.value.exit_code == 2


def test_unreadable_file_is_a_config_error(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        load(bad)
