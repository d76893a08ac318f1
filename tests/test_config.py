"""The config system: YAML + dotted overrides, errors that name the field."""

from __future__ import annotations

import re

import pytest

from pretrainlab.config import (
    PrepareConfig,
    RunConfig,
    apply_overrides,
    dump_config,
    load_config,
    parse_override,
    validate,
)
from pretrainlab.errors import ConfigError


def test_override_values_are_yaml_scalars():
    assert parse_override("model.d_model=256") == (["model", "d_model"], 256)
    assert parse_override("train.compile=true") == (["train", "compile"], True)
    assert parse_override("optim.lr=3e-4") == (["optim", "lr"], 3e-4)
    assert parse_override("name=my run") == (["name"], "my run")
    assert parse_override("data.weights={a: 1, b: 2}") == (["data", "weights"], {"a": 1, "b": 2})


def test_overrides_create_sections_and_index_lists():
    tree = {"sources": [{"type": "text", "domain": "a", "paths": ["x"]}]}
    out = apply_overrides(tree, ["sources.0.domain=b", "tokenizer.vocab_size=512"])
    assert out["sources"][0]["domain"] == "b"
    assert out["tokenizer"] == {"vocab_size": 512}
    assert tree["sources"][0]["domain"] == "a", "the input tree is not modified"


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1"])
def test_malformed_override_is_named(bad):
    with pytest.raises(ConfigError, match="override"):
        parse_override(bad)


def test_list_index_out_of_range_is_named():
    with pytest.raises(ConfigError, match="sources.3"):
        apply_overrides({"sources": [{}]}, ["sources.3.domain=x"])


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'model.d_modle'; did you mean 'model.d_model'\?"):
        validate(RunConfig, {"model": {"d_modle": 64}})
    with pytest.raises(ConfigError, match=r"did you mean 'train.steps'"):
        load_config(RunConfig, None, ["train.step=5"])
    with pytest.raises(ConfigError, match=r"sources.0.sepprator'; did you mean 'sources.0.separator'"):
        validate(PrepareConfig, {"sources": [{"type": "text", "domain": "x", "paths": ["a"], "sepprator": "x"}]})


def test_wrong_type_and_negative_rate_name_the_field():
    with pytest.raises(ConfigError, match="train.steps"):
        load_config(RunConfig, None, ["train.steps=many"])
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(RunConfig, None, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match="data.weights"):
        load_config(RunConfig, None, ["data.weights={a: -1}"])


def test_unknown_source_type_is_named():
    with pytest.raises(ConfigError, match="sources.0"):
        validate(PrepareConfig, {"sources": [{"type": "csv", "domain": "x"}]})


def test_tokenizer_file_needs_a_path():
    with pytest.raises(ConfigError, match="tokenizer.path"):
        validate(PrepareConfig, {"sources": [{"type": "stdlib"}], "tokenizer": {"kind": "file"}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(RunConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  d_model: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(RunConfig, bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(RunConfig, notmap)


def test_dump_round_trips(tmp_path):
    cfg = load_config(RunConfig, None, ["model.d_model=64", "data.weights={a: 1.0}"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(RunConfig, path) == cfg


def test_yaml_reads_exponent_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 3e-4\n  options: {foo: 1e-8}\n")
    cfg = load_config(RunConfig, path)
    assert cfg.optim.lr == 3e-4 and cfg.optim.options["foo"] == 1e-8


def test_mixture_stages_need_bounds_except_the_last():
    from pretrainlab.config import DataConfig

    ok = DataConfig(stages=[{"weights": {"a": 1}, "until_tokens": 100}, {"weights": {"b": 1}}])
    assert ok.stages[0].until_tokens == 100 and ok.stages[1].until_tokens is None
    for bad, words in (
        ({"stages": [{"weights": {"a": 1}}, {"weights": {"b": 1}}]}, "stages[0]"),
        ({"stages": [{"weights": {"a": 1}, "until_fraction": 0.5}]}, "stages[0]"),
        ({"stages": [{"weights": {"a": 1}, "until_tokens": 5, "until_fraction": 0.5}, {"weights": {"a": 1}}]}, "not both"),
        ({"weights": {"a": 1}, "stages": [{"weights": {"a": 1}}]}, "not both"),
        ({"stages": [{"weights": {"a": 0}}]}, "> 0"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"max_epochs": {"a": -1}}, "max_epochs['a']"),
    ):
        with pytest.raises(ValueError, match=re.escape(words)):
            DataConfig(**bad)


def test_filters_and_procedural_sources_parse():
    from pretrainlab.config import PrepareConfig

    cfg = PrepareConfig(
        sources=[{"type": "procedural", "domain": "dyck", "generator": "dyck", "documents": 10}],
        filters=[{"name": "quality", "options": {"min_words": 3}, "domains": ["dyck"]}],
    )
    assert cfg.sources[0].generator == "dyck" and cfg.filters[0].domains == ["dyck"]
