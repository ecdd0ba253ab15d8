"""The `sned space` and `sned cost` contracts."""

import json

import sned
from sned.cli import main


def test_cost_prints_integer_json(capsys):
    assert main(["cost", "tiny-base", "--preset", "S", "--resolution", "32", "--frames", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    space = sned.search_space("tiny-base")
    c = space.cost(space.preset("S", 32), frames=4)
    assert out["params"] == c.params and out["macs"] == c.macs
    assert isinstance(out["params"], int) and (out["resolution"], out["frames"]) == (32, 4)


def test_cost_with_arch_file(tmp_path, capsys):
    space = sned.search_space("tiny-base")
    arch = space.preset("M")
    arch.save(tmp_path / "m.json")
    assert main(["cost", "tiny-base", "--arch", str(tmp_path / "m.json")]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == space.cost(arch).params


def test_space_json(capsys):
    assert main(["space", "tiny-ssr", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d["presets"]) == {"S", "M", "L", "B"}
    assert d["log10_size"] > 10 and d["num_elastic_layers"] == len(d["elastic_layers"])


def test_errors_exit_2_with_message(tmp_path, capsys):
    assert main(["cost", "nope"]) == 2
    assert "unknown config 'nope'" in capsys.readouterr().err
    assert main(["cost", "tiny-base", "--resolution", "48"]) == 2
    assert "resolution 48" in capsys.readouterr().err
    assert main(["cost", "tiny-base", "--frames", "0"]) == 2
    (tmp_path / "a.json").write_text("{")
    assert main(["cost", "tiny-base", "--arch", str(tmp_path / "a.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
