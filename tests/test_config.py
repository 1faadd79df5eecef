"""The training configuration is typed and validated once, up front, with one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fracturescan.cli.main import main
from fracturescan.config import AugmentConfig, TrainConfig, config_from_dict, load_config, save_config
from fracturescan.errors import ConfigError


def test_yaml_exponent_numbers_are_numbers(tmp_path: Path) -> None:
    text = "lr: 1e-4\nmin_lr: 1e-7\nweight_decay: 1e-5\naugment:\n  erase: 5e-1\n"
    # The trap this guards: YAML 1.1 wants a dot, so PyYAML hands these over as strings.
    assert yaml.safe_load(text)["lr"] == "1e-4"
    path = tmp_path / "c.yaml"
    path.write_text(text)
    cfg = load_config(path)
    assert (cfg.lr, cfg.min_lr, cfg.weight_decay, cfg.augment.erase) == (1e-4, 1e-7, 1e-5, 0.5)
    assert all(type(v) is float for v in (cfg.lr, cfg.min_lr, cfg.weight_decay, cfg.augment.erase))


def test_saved_config_reads_back_identical(tmp_path: Path) -> None:
    cfg = config_from_dict({"lr": "3e-5", "min_lr": "1e-9", "augment": {"rotation": 7}, "target_sensitivity": 0.9,
                            "threshold_method": "sensitivity", "max_train_images": 100})
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_defaults_are_the_original_recipe() -> None:
    cfg = TrainConfig()
    assert (cfg.arch, cfg.lr, cfg.batch_size, cfg.monitor) == ("densenet121", 1e-4, 32, "val_loss")
    assert cfg.augment == AugmentConfig()


def test_partial_augment_section_keeps_other_defaults() -> None:
    cfg = config_from_dict({"augment": {"rotation": 5}})
    assert cfg.augment.rotation == 5.0 and cfg.augment.hflip == AugmentConfig().hflip


# (values, text the one-line error must contain: the offending key)
BAD = [
    ({"epoch": 3}, "unknown key 'epoch'"),
    ({"augment": {"rotaton": 3}}, "unknown key 'augment.rotaton'"),
    ({"lr": "1e-4x"}, "lr: Input should be a valid number"),
    ({"lr": 0}, "lr: Input should be greater than 0"),
    ({"min_lr": "-1e-7"}, "min_lr: Input should be greater than or equal to 0"),
    ({"weight_decay": "abc"}, "weight_decay: Input should be a valid number"),
    ({"lr": True}, "lr: expected a number, got a boolean"),
    ({"lr": ".nan"}, "lr:"),
    ({"epochs": 2.5}, "epochs: Input should be a valid integer"),
    ({"dropout": 1.5}, "dropout: Input should be less than 1"),
    ({"augment": {"hflip": 2}}, "augment.hflip: Input should be less than or equal to 1"),
    ({"monitor": "val_acc"}, "monitor: Input should be 'val_loss', 'val_auc' or 'val_study_auc'"),
    ({"threshold_method": "sensitivity"}, "needs target_sensitivity"),
    ({"cuda_graph": True, "compile": True}, "cuda_graph and compile are alternatives"),
    ({"arch": "densnet121"}, "arch: unknown architecture 'densnet121': did you mean densenet121"),
    ({"body_part": "XR_KNEE"}, "body_part: Unknown body part 'XR_KNEE'"),
    ({"device": "gpu"}, "device: use auto, cpu, cuda or cuda:N"),
    ({"weights": "/no/such/weights.pth"}, "weights: no such file or directory"),
    ({"out": 12}, "out: Input should be a valid string"),
]


@pytest.mark.parametrize(("values", "expected"), BAD, ids=[next(iter(v)) + "-" + str(i) for i, (v, _) in enumerate(BAD)])
def test_each_bad_value_is_one_line_naming_the_key(values: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(values)
    message = str(err.value)
    assert expected in message, message
    assert message.startswith("Invalid configuration: ") and "\n" not in message


def test_two_mistakes_are_both_named() -> None:
    with pytest.raises(ConfigError, match=r"lr: .*; .*unknown key 'epoch'"):
        config_from_dict({"lr": "fast", "epoch": 3})


def test_direct_construction_and_replace_validate_too() -> None:
    with pytest.raises(ConfigError, match="dropout"):
        TrainConfig(dropout=1.5)
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig().replace(epochs=0)
    assert TrainConfig().replace(lr="2e-4").lr == 2e-4
    with pytest.raises(Exception, match="frozen"):
        TrainConfig().lr = 1.0  # type: ignore[misc]


def test_config_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\nmin_lr: 1e-7x\n")
    with pytest.raises(ConfigError, match=rf"Invalid configuration in {path}: min_lr: .*'1e-7x'"):
        load_config(path)
    path.write_text("lr: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_config(path)
    assert "\n" not in str(err.value)


def test_cli_refuses_a_bad_config_before_touching_data(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("lr: 1e-4\nweight_decay: 1e-5\nmin_lr: 1e-7\nlr_factor: 10\n")
    out = tmp_path / "run"
    # The data folder does not exist either: the config error must come first, and nothing is written.
    code = main(["train", "--config", str(config), "--data", str(tmp_path / "no-data"), "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: Invalid configuration in") and "\n" not in err
    assert "lr_factor: Input should be less than 1 (got 10)" in err
    assert not out.exists() and not (tmp_path / "cache").exists()
