import pytest
from pydantic import Field

from scalelab.config import Config
from scalelab.errors import ConfigError


class Demo(Config):
    lr: float = Field(1e-3, gt=0, le=1)
    batch: int = Field(8, ge=1)
    schedule: str = "cosine"


def test_override_parses_values_and_validates():
    c = Demo.build().override(["lr=0.01", "batch=16", "schedule=wsd"])
    assert (c.lr, c.batch, c.schedule) == (0.01, 16, "wsd")


def test_unknown_key_lists_close_names():
    with pytest.raises(ConfigError, match="did you mean batch"):
        Demo.build().override(["bach=3"])


def test_out_of_range_names_field_and_bound():
    with pytest.raises(ConfigError) as e:
        Demo.build(lr=-1)
    msg = str(e.value)
    assert "lr=-1" in msg and "greater than 0" in msg and "\n" not in msg
