import pytest

from pretrainlab.errors import ConfigError
from pretrainlab.model import ATTENTIONS, LINEARS, MLPS, NORMS
from pretrainlab.registry import Registry


def test_register_get_names() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("beta")(2)
    reg.register("alpha")(1)
    assert reg.get("alpha") == 1 and reg.names() == ["alpha", "beta"] and "beta" in reg


def test_unknown_name_names_kind_field_and_suggests_close_name() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("rmsnorm")(1)
    reg.register("layernorm")(2)
    with pytest.raises(ConfigError) as e:
        reg.get("rmsnrom", field="model.norm")
    msg = str(e.value)
    assert "model.norm='rmsnrom'" in msg and "widget" in msg
    assert "did you mean 'rmsnorm'" in msg and "layernorm" in msg


def test_duplicate_registration_is_refused() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(2)


def test_builtin_entries() -> None:
    assert {"rmsnorm", "layernorm"} <= set(NORMS.names())
    assert {"swiglu", "gelu"} <= set(MLPS.names())
    assert "sdpa" in ATTENTIONS and "dense" in LINEARS
