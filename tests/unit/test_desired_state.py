"""models.yaml validation and rollout planning (edgeml.fleet plugin_utils/desired_state), pure Python.

Bundles are real: built and signed with edge_runtime into a registry directory once per module. The
validator only reads their manifests, so any bytes serve as model and golden files.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.bundle import BundleSpec, build_bundle
from tests.support.http_server import BundleServer, Route
from tests.support.keys import make_keypair

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils import desired_state as ds  # noqa: E402

RELEASES = [("defect-classifier", "1.0.0", 1), ("defect-classifier", "1.1.0", 2), ("anomaly-detector", "0.3.0", 1)]

INVENTORY: dict[str, list[str]] = {
    "all": ["dev-a1", "dev-a2", "dev-a3", "dev-b1", "dev-b2", "dev-c1"],
    "ungrouped": ["dev-c1"],
    "line_a": ["dev-a1", "dev-a2", "dev-a3"],
    "line_b": ["dev-b1", "dev-b2"],
}

TEMPLATE = """\
schema: 1
registry: {registry}
models:
  defect-classifier:
    versions:
      "1.0.0": {{bundle: {b_dc100}, digest: "{d_dc100}", release_counter: 1, size: {s_dc100}}}
      "1.1.0":
        bundle: {b_dc110}
        digest: "{d_dc110}"
        release_counter: 2
        size: {s_dc110}
  anomaly-detector:
    versions:
      "0.3.0": {{bundle: {b_ad030}, digest: "{d_ad030}", release_counter: 1, size: {s_ad030}}}
groups:
  line_a:
    models:
      defect-classifier: "1.1.0"
    rollout:
      waves: [1, "50%", "100%"]
      max_fail_percent: 0
      health_gate: {{require_smoke_pass: true, max_p95_latency_ms: 20.0}}
  line_b:
    models:
      defect-classifier: "1.0.0"
      anomaly-detector: "0.3.0"
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A registry directory with three signed bundles, and the values models.yaml needs for them."""
    root = tmp_path_factory.mktemp("registry")
    pair = make_keypair(root / "keys", "release")
    key = pair.private
    src = root / "src"
    src.mkdir()
    (src / "model.tflite").write_bytes(b"not really a model")
    (src / "golden.npz").write_bytes(b"not really golden data")
    reg = root / "registry"
    values: dict[str, Any] = {"registry": str(reg), "pub": str(pair.public_path), "key": str(pair.private_path)}
    for name, version, counter in RELEASES:
        rel = f"{name}/{version}.edgebundle"
        out = reg / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        spec = BundleSpec(
            name=name,
            version=version,
            release_counter=counter,
            files={"model.tflite": src / "model.tflite", "golden.npz": src / "golden.npz"},
            entrypoints={"model": "model.tflite", "golden": "golden.npz"},
            input_shape=(1, 4),
            input_dtype="float32",
            smoke_test={"atol": 0.05, "min_label_agreement": 0.9, "p95_latency_ms": 50.0, "repeats": 1},
        )
        manifest = build_bundle(spec, out, [key])
        tag = {"defect-classifier": "dc", "anomaly-detector": "ad"}[name] + version.replace(".", "")
        values[f"b_{tag}"] = rel
        values[f"d_{tag}"] = manifest.digest
        values[f"s_{tag}"] = out.stat().st_size
    return values


def render(values: dict[str, Any], **overrides: Any) -> str:
    return TEMPLATE.format(**{**values, **overrides})


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return str(path)


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[nth - 1]


def fails(
    tmp_path: Path,
    text: str,
    groups: dict[str, list[str]] | None = None,
    check_registry: bool = True,
) -> ds.DesiredStateError:
    with pytest.raises(ds.DesiredStateError) as info:
        ds.build_plan(write(tmp_path, text), groups or INVENTORY, check_registry=check_registry)
    return info.value


# ------------------------------------------------------------------------------------------------
# A good file and the plan contract


def test_good_file_gives_the_plan(tmp_path: Path, registry: dict[str, Any]) -> None:
    path = write(tmp_path, render(registry))
    plan = ds.build_plan(path, INVENTORY)
    assert json.loads(json.dumps(plan)) == plan
    assert plan["models_file"] == str(Path(path).resolve())
    assert plan["registry"] == registry["registry"]
    assert sorted(plan["hosts"]) == ["dev-a1", "dev-a2", "dev-a3", "dev-b1", "dev-b2"]  # dev-c1 pins nothing
    a = plan["groups"]["line_a"]
    assert a["hosts"] == ["dev-a1", "dev-a2", "dev-a3"]
    assert [len(w) for w in a["waves"]] == [1, 1, 1]  # 1, ceil(50% of 3) = 2, 3
    assert a["policy"] == {
        "waves": [1, "50%", "100%"],
        "max_fail_percent": 0,
        "health_gate": {
            "require_smoke_pass": True,
            "max_p95_latency_ms": 20.0,
            "max_error_rate_increase": None,
            "min_mean_confidence": None,
        },
    }
    b = plan["groups"]["line_b"]
    assert b["policy"] == {
        "waves": [1, "100%"],
        "max_fail_percent": 0,
        "health_gate": dict(ds.DEFAULT_HEALTH_GATE),
    }
    assert [len(w) for w in b["waves"]] == [1, 1]
    assert plan["max_wave"] == 3
    host = plan["hosts"][a["waves"][0][0]]
    assert host["groups"] == ["line_a"]
    assert host["rollout_group"] == "line_a"
    assert host["wave"] == 1
    assert host["models"] == {
        "defect-classifier": {
            "version": "1.1.0",
            "digest": registry["d_dc110"],
            "release_counter": 2,
            "size": registry["s_dc110"],
            "source": str(Path(registry["registry"]) / "defect-classifier" / "1.1.0.edgebundle"),
        }
    }
    assert sorted(plan["hosts"]["dev-b1"]["models"]) == ["anomaly-detector", "defect-classifier"]
    for g in plan["groups"].values():
        for number, wave in enumerate(g["waves"], start=1):
            assert all(plan["hosts"][h]["wave"] == number for h in wave)


def test_relative_registry_is_relative_to_models_yaml(tmp_path: Path, registry: dict[str, Any]) -> None:
    reg = Path(registry["registry"])
    text = render(registry, registry=os.path.relpath(reg, tmp_path))
    assert "registry: ../" in text
    plan = ds.build_plan(write(tmp_path, text), INVENTORY)
    assert plan["registry"] == str(reg)


def test_host_in_two_groups_without_conflict(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry) + '  line_x:\n    models:\n      anomaly-detector: "0.3.0"\n'
    groups = {**INVENTORY, "line_x": ["dev-a1", "dev-c1"]}
    plan = ds.build_plan(write(tmp_path, text), groups, check_registry=False)
    a1 = plan["hosts"]["dev-a1"]
    assert a1["groups"] == ["line_a", "line_x"]
    assert a1["rollout_group"] == "line_a"
    assert {m: e["version"] for m, e in a1["models"].items()} == {
        "anomaly-detector": "0.3.0",
        "defect-classifier": "1.1.0",
    }
    assert plan["groups"]["line_x"]["hosts"] == ["dev-c1"]  # dev-a1 rolls out with line_a
    assert plan["groups"]["line_x"]["waves"] == [["dev-c1"]]
    assert plan["hosts"]["dev-c1"]["rollout_group"] == "line_x"


def test_error_string_format() -> None:
    err = ds.DesiredStateError("models.yaml", 14, 7, "something is wrong", "fix it")
    assert str(err) == "models.yaml:14:7: something is wrong (hint: fix it)"
    assert str(ds.DesiredStateError("models.yaml", 3, 1, "bad")) == "models.yaml:3:1: bad"
    assert err.to_dict()["line"] == 14


# ------------------------------------------------------------------------------------------------
# Bad files: one per problem, each at its exact line


def test_yaml_syntax_error(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace("      max_fail_percent: 0\n", "      max_fail_percent: [0\n")
    err = fails(tmp_path, text)
    assert "YAML syntax error" in err.problem
    assert err.line == line_of(text, "max_fail_percent") + 1


def test_duplicate_key(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry) + '  line_a:\n    models:\n      defect-classifier: "1.0.0"\n'
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "  line_a:", nth=2)
    assert err.column == 3
    assert "duplicate key 'line_a'" in err.problem
    assert f"first on line {line_of(text, '  line_a:')}" in err.problem


def test_unknown_key_in_rollout(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace("max_fail_percent: 0", "max_fail_pct: 0")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "max_fail_pct")
    assert "unknown key 'max_fail_pct'" in err.problem
    assert "max_fail_percent" in (err.hint or "")


def test_unknown_key_at_top_level_and_in_health_gate(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry) + "channel: stable\n"
    err = fails(tmp_path, text)
    assert (err.line, err.column) == (line_of(text, "channel:"), 1)
    assert "unknown key 'channel' at the top level" in err.problem

    text = render(registry).replace("max_p95_latency_ms: 20.0", "max_p99_latency_ms: 20.0")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "max_p99_latency_ms")
    assert "unknown key 'max_p99_latency_ms'" in err.problem


@pytest.mark.parametrize("pin", ['"latest"', '"^1.1.0"', '">=1.0.0"', '"1.1"', '"1.1.x"', "v1.1.0"])
def test_pin_must_be_exact(tmp_path: Path, registry: dict[str, Any], pin: str) -> None:
    text = render(registry).replace('defect-classifier: "1.1.0"', f"defect-classifier: {pin}")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, f"defect-classifier: {pin}")
    assert "groups.line_a.models.defect-classifier" in err.problem
    assert "is not valid" in err.problem
    assert "exact pins only" in (err.hint or "")


def test_unquoted_version_number(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace('defect-classifier: "1.1.0"', "defect-classifier: 1.1")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "defect-classifier: 1.1")
    assert "must be a string, not a number" in err.problem
    assert "quote" in (err.hint or "")


def test_catalogue_version_key_must_be_exact(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace('"1.0.0": {bundle', '"1.0": {bundle')
    err = fails(tmp_path, text)
    assert (err.line, err.column) == (line_of(text, '"1.0": {bundle'), 7)
    assert "invalid key '1.0'" in err.problem


def test_missing_required_key(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace(f'        digest: "{registry["d_dc110"]}"\n', "")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, '"1.1.0":')
    assert "missing the required key 'digest'" in err.problem


def test_malformed_digest(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace(registry["d_dc110"], "sha256:abc")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "sha256:abc")
    assert "sha256:<64 hex>" in (err.hint or "")


def test_non_string_key(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace('"1.0.0": {bundle', "1.0: {bundle")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "1.0: {bundle")
    assert "not as a string" in err.problem


def test_version_not_in_catalogue(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace('defect-classifier: "1.1.0"', 'defect-classifier: "1.2.0"')
    err = fails(tmp_path, text)
    assert (err.line, err.column) == (line_of(text, '"1.2.0"'), 26)
    assert "defect-classifier 1.2.0 is not in the catalogue" in err.problem
    assert err.hint == "available versions: 1.0.0, 1.1.0"


def test_model_not_in_catalogue(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace('anomaly-detector: "0.3.0"', 'anomaly-detectr: "0.3.0"')
    err = fails(tmp_path, text)
    assert (err.line, err.column) == (line_of(text, "anomaly-detectr:"), 7)
    assert "model 'anomaly-detectr' is not in the catalogue" in err.problem
    assert "did you mean 'anomaly-detector'" in (err.hint or "")


def test_group_not_in_inventory(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace("  line_b:", "  line_c:")
    err = fails(tmp_path, text)
    assert (err.line, err.column) == (line_of(text, "line_c:"), 3)
    assert "group 'line_c' is not in the inventory" in err.problem
    assert "line_a, line_b" in (err.hint or "")


def test_implicit_group_cannot_be_pinned(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace("  line_b:", "  all:")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "  all:")
    assert "implicit inventory group" in err.problem


def test_device_with_two_versions_of_a_model(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry)
    groups = {**INVENTORY, "line_b": ["dev-b1", "dev-b2", "dev-a2"]}
    err = fails(tmp_path, text, groups)
    line_a_pin = line_of(text, 'defect-classifier: "1.1.0"')
    line_b_pin = line_of(text, 'defect-classifier: "1.0.0"')
    assert err.line == line_b_pin
    for part in ("'dev-a2'", "line_a", "line_b", "1.1.0", "1.0.0", f"line {line_a_pin}", f"line {line_b_pin}"):
        assert part in err.problem


@pytest.mark.parametrize(
    ("waves", "item", "phrase"),
    [
        ('[1, "abc", "100%"]', "'abc'", "neither a device count nor a percentage"),
        ('[1, "0%", "100%"]', "'0%'", "covers no devices"),
        ('[1, "150%"]', "'150%'", "more than the whole group"),
        ('[-1, "100%"]', "-1", "not a positive device count"),
        ('[0, "100%"]', "wave 0", "not a positive device count"),
        ('[1.5, "100%"]', "1.5", "not a whole number of devices"),
        ('["50%", "10%"]', "'10%'", "covers less than wave 1 ('50%'"),
        ("[3, 1]", "wave 2 (1)", "covers less than wave 1 (3"),
        ("[]", "waves", "must not be empty"),
    ],
)
def test_bad_waves(tmp_path: Path, registry: dict[str, Any], waves: str, item: str, phrase: str) -> None:
    text = render(registry).replace('waves: [1, "50%", "100%"]', f"waves: {waves}")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "waves:")
    assert phrase in err.problem
    assert item in err.problem


def test_waves_in_block_style_point_at_the_item(tmp_path: Path, registry: dict[str, Any]) -> None:
    block = 'waves:\n        - 1\n        - "50%"\n        - "30%"'
    text = render(registry).replace('waves: [1, "50%", "100%"]', block)
    err = fails(tmp_path, text)
    assert (err.line, err.column) == (line_of(text, '- "30%"'), 11)
    assert "covers less than wave 2" in err.problem
    rc50 = line_of(text, '- "50%"')
    assert f"line {rc50})" in err.problem


def test_release_counter_must_increase_with_version(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace("        release_counter: 2\n", "        release_counter: 1\n")
    err = fails(tmp_path, text, check_registry=False)
    assert err.line == line_of(text, "        release_counter: 1")
    assert "defect-classifier 1.1.0 has release_counter 1, not higher than 1.0.0's 1" in err.problem
    v100 = line_of(text, '"1.0.0"')
    assert f"(line {v100})" in err.problem


def test_prerelease_sorts_before_its_release(tmp_path: Path, registry: dict[str, Any]) -> None:
    # 1.1.0-rc.1 < 1.1.0, so the rc needs a lower counter than 1.1.0: counter 3 is wrong.
    text = render(registry).replace(
        "  anomaly-detector:\n    versions:",
        '      "1.1.0-rc.1": {bundle: x/rc.edgebundle, digest: "sha256:' + "0" * 64 + '", release_counter: 3, '
        "size: 1}\n  anomaly-detector:\n    versions:",
    )
    err = fails(tmp_path, text, check_registry=False)
    assert err.line == line_of(text, "        release_counter: 2")
    assert "1.1.0 has release_counter 2, not higher than 1.1.0-rc.1's 3" in err.problem


def test_empty_and_missing_file(tmp_path: Path) -> None:
    err = fails(tmp_path, "")
    assert err.line == 1
    assert "empty" in err.problem
    with pytest.raises(ds.DesiredStateError, match="file not found"):
        ds.build_plan(str(tmp_path / "nope.yaml"), INVENTORY)


# ------------------------------------------------------------------------------------------------
# Registry checks against a real registry directory


def test_digest_mismatch(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry, d_dc110=registry["d_dc100"])
    err = fails(tmp_path, text)
    assert err.line == line_of(text, f'digest: "{registry["d_dc100"]}"', nth=2)
    assert "does not match the registry" in err.problem
    assert registry["d_dc110"] in err.problem
    assert ds.build_plan(write(tmp_path, text), INVENTORY, check_registry=False)["hosts"]


def test_missing_bundle(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry, b_ad030="anomaly-detector/0.3.1.edgebundle")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "0.3.1.edgebundle")
    assert "is not in the registry" in err.problem
    assert "0.3.1.edgebundle" in err.problem


def test_missing_registry_directory(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry, registry="no-such-registry")
    err = fails(tmp_path, text)
    assert err.line == 2
    assert "does not exist" in err.problem


def test_bundle_holds_another_version(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry, b_dc100=registry["b_dc110"])
    err = fails(tmp_path, text)
    assert err.line == line_of(text, '"1.0.0": {bundle')
    assert "holds defect-classifier 1.1.0, not defect-classifier 1.0.0" in err.problem


def test_release_counter_differs_from_the_bundle(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace("        release_counter: 2\n", "        release_counter: 5\n")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "release_counter: 5")
    assert "is 5 here but 2 in the bundle" in err.problem


def test_size_differs_from_the_bundle(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry, s_ad030=7)
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "size: 7}")
    assert f"the bundle has {registry['s_ad030']} bytes" in err.problem


def test_not_a_bundle(tmp_path: Path, registry: dict[str, Any]) -> None:
    junk = Path(registry["registry"]) / "junk" / "junk.edgebundle"
    junk.parent.mkdir(exist_ok=True)
    junk.write_bytes(b"\0" * 10)
    text = render(registry, b_ad030="junk/junk.edgebundle")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "junk.edgebundle")
    assert "cannot read the manifest of anomaly-detector 0.3.0" in err.problem


def test_http_registry(tmp_path: Path, registry: dict[str, Any], http_server: BundleServer) -> None:
    reg = Path(registry["registry"])
    for _, rel in ((k, v) for k, v in registry.items() if k.startswith("b_")):
        http_server.add(f"/reg/{rel}", Route((reg / rel).read_bytes()))
    base = http_server.url("/reg")
    plan = ds.build_plan(write(tmp_path, render(registry, registry=base)), INVENTORY)
    assert plan["registry"] == base
    assert plan["hosts"]["dev-b1"]["models"]["anomaly-detector"]["source"] == f"{base}/{registry['b_ad030']}"
    req = http_server.requests_for(f"/reg/{registry['b_dc100']}")[0]
    assert req.range is not None
    assert req.range.startswith("bytes=0-")

    text = render(registry, registry=base, d_dc100=registry["d_dc110"])
    err = fails(tmp_path, text)
    assert err.line == line_of(text, '"1.0.0": {bundle')
    assert "does not match the registry" in err.problem

    text = render(registry, registry=base, b_ad030="anomaly-detector/9.9.9.edgebundle")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "9.9.9.edgebundle")
    assert "is not in the registry" in err.problem


# ------------------------------------------------------------------------------------------------
# Waves


HOSTS = [f"dev-{i:02d}" for i in range(10)]


def sizes(waves: list[list[str]]) -> list[int]:
    return [len(w) for w in waves]


def test_percentage_of_a_small_group_is_at_least_one_device() -> None:
    assert ds.resolve_waves(["10%"], HOSTS[:3]) == [["dev-00"], ["dev-01", "dev-02"]]
    assert sizes(ds.resolve_waves(["34%", "100%"], HOSTS[:3])) == [2, 1]  # rounds up


def test_waves_are_cumulative() -> None:
    assert sizes(ds.resolve_waves([1, "50%", "100%"], HOSTS)) == [1, 4, 5]
    assert sizes(ds.resolve_waves([2, 5, 10], HOSTS)) == [2, 3, 5]


def test_last_wave_covers_the_group() -> None:
    assert sizes(ds.resolve_waves(["50%"], HOSTS[:4])) == [2, 2]
    assert sizes(ds.resolve_waves([2], HOSTS[:5])) == [2, 3]
    waves = ds.resolve_waves([1, "30%"], HOSTS)
    assert [h for w in waves for h in w] == HOSTS


def test_empty_waves_are_dropped() -> None:
    assert sizes(ds.resolve_waves([1, 1, "10%", "100%"], HOSTS[:5])) == [1, 4]
    assert sizes(ds.resolve_waves([10, "50%"], HOSTS[:4])) == [4]  # the count already covers the group
    assert ds.resolve_waves([1, "100%"], []) == []


def test_wave_order_is_deterministic_and_ignores_inventory_order() -> None:
    pins = {"defect-classifier": "1.1.0"}
    first = ds.wave_order("line_a", pins, HOSTS)
    shuffled = HOSTS[:]
    random.Random(7).shuffle(shuffled)
    assert ds.wave_order("line_a", pins, shuffled) == first
    assert sorted(first) == HOSTS
    assert first != HOSTS  # hashed, not alphabetical (fixed inputs, so this is deterministic)


def test_a_new_promotion_picks_another_order() -> None:
    hosts = [f"dev-{i:02d}" for i in range(20)]
    assert ds.wave_order("g", {"m": "1.1.0"}, hosts) != ds.wave_order("g", {"m": "1.2.0"}, hosts)


def test_plan_is_deterministic_across_runs_and_inventory_order(tmp_path: Path, registry: dict[str, Any]) -> None:
    big = {**INVENTORY, "line_a": [f"dev-a{i}" for i in range(1, 21)]}
    path = write(tmp_path, render(registry))
    plan = ds.build_plan(path, big)
    assert ds.build_plan(path, big) == plan
    rng = random.Random(3)
    for _ in range(3):
        shuffled = {g: rng.sample(h, len(h)) for g, h in reversed(list(big.items()))}
        assert ds.build_plan(path, shuffled) == plan
    assert sizes(plan["groups"]["line_a"]["waves"]) == [1, 9, 10]
    assert plan["groups"]["line_a"]["hosts"] == sorted(big["line_a"])


def test_size_is_optional(tmp_path: Path, registry: dict[str, Any]) -> None:
    ad = f'"0.3.0": {{bundle: {registry["b_ad030"]}, digest: "{registry["d_ad030"]}", release_counter: 1'
    text = render(registry).replace(f"{ad}, size: {registry['s_ad030']}}}", f"{ad}}}")
    assert "size" not in text.splitlines()[line_of(text, '"0.3.0": {bundle') - 1]
    path = write(tmp_path, text)
    measured = ds.build_plan(path, INVENTORY)["hosts"]["dev-b1"]["models"]["anomaly-detector"]
    assert measured["size"] == registry["s_ad030"]
    unchecked = ds.build_plan(path, INVENTORY, check_registry=False)["hosts"]["dev-b1"]["models"]
    assert unchecked["anomaly-detector"]["size"] is None
    assert unchecked["defect-classifier"]["size"] == registry["s_dc100"]


# ------------------------------------------------------------------------------------------------
# models.yaml as hostile input: aliases, encodings, size and depth (plugin_utils/models_yaml.py)

BILLION_LAUGHS = """\
schema: 1
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
j: &j [*i, *i, *i, *i, *i, *i, *i, *i, *i]
k: &k [*j, *j, *j, *j, *j, *j, *j, *j, *j]
"""


def test_billion_laughs_is_refused_at_its_first_anchor_without_expanding(tmp_path: Path) -> None:
    text = BILLION_LAUGHS  # 9**11 strings if expanded, and 9**41 with the lines below
    text += "".join(f"l{n}: &l{n} [" + ", ".join([f"*{'k' if n == 0 else f'l{n - 1}'}"] * 9) + "]\n" for n in range(30))
    assert 2000 < len(text.encode()) < 4000
    err = fails(tmp_path, text)
    assert (err.line, err.column) == (2, 4)
    assert "anchor &a" in err.problem
    assert err.hint is not None
    assert "write each value out" in err.hint


def test_an_alias_is_refused_at_its_position(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace('      defect-classifier: "1.0.0"\n', "      defect-classifier: *pin\n")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "*pin")
    assert err.column == 26
    assert "alias *pin" in err.problem


def test_anchors_are_refused_even_without_an_alias(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace("    rollout:\n", "    rollout: &policy\n", 1)
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "&policy")
    assert "anchor &policy" in err.problem


def test_a_utf8_bom_is_reported_at_line_1_column_1_with_the_fix(tmp_path: Path, registry: dict[str, Any]) -> None:
    path = tmp_path / "models.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + render(registry).encode())
    with pytest.raises(ds.DesiredStateError) as info:
        ds.build_plan(str(path), INVENTORY)
    assert (info.value.line, info.value.column) == (1, 1)
    assert "byte order mark" in info.value.problem
    assert info.value.hint is not None
    assert "without BOM" in info.value.hint
    assert str(info.value).startswith(f"{path}:1:1: ")


def test_a_utf16_file_is_reported_as_such(tmp_path: Path, registry: dict[str, Any]) -> None:
    path = tmp_path / "models.yaml"
    path.write_bytes(render(registry).encode("utf-16"))
    with pytest.raises(ds.DesiredStateError, match="UTF-16") as info:
        ds.build_plan(str(path), INVENTORY)
    assert (info.value.line, info.value.column) == (1, 1)


@pytest.mark.parametrize(("prefix", "column"), [("# Zürich ", 10), ("# caf", 6), ("", 1)])
def test_latin1_is_reported_at_the_line_and_column_of_the_first_bad_byte(
    tmp_path: Path, registry: dict[str, Any], prefix: str, column: int
) -> None:
    lines = render(registry).splitlines(keepends=True)
    lines.insert(3, prefix + "café line\n")
    data = "".join(lines).encode("utf-8")
    bad = ("".join(lines[:3]) + prefix).encode("utf-8") + "café line\n".encode("latin-1")
    data = bad + "".join(lines[4:]).encode("utf-8")
    path = tmp_path / "models.yaml"
    path.write_bytes(data)
    with pytest.raises(ds.DesiredStateError) as info:
        ds.build_plan(str(path), INVENTORY)
    err = info.value
    assert "not UTF-8" in err.problem
    assert "0xe9" in err.problem
    assert err.line == 4
    assert err.column == column + len("caf")
    assert err.hint is not None
    assert "iconv" in err.hint


def test_a_control_character_is_located(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry).replace("schema: 1\n", "schema: 1\n# bad \x07 bell\n")
    err = fails(tmp_path, text)
    assert (err.line, err.column) == (2, 7)
    assert "not allowed" in err.problem


def test_file_size_limit_at_the_limit_and_one_byte_beyond(tmp_path: Path, registry: dict[str, Any]) -> None:
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.models_yaml import ModelsLimits

    path = write(tmp_path, render(registry))
    size = Path(path).stat().st_size
    ds.validate(path, INVENTORY, limits=ModelsLimits(max_file_bytes=size))
    with pytest.raises(ds.DesiredStateError, match=f"larger than {size - 1} bytes"):
        ds.validate(path, INVENTORY, limits=ModelsLimits(max_file_bytes=size - 1))
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 110_000 + render(registry))  # > 1 MiB by default
    with pytest.raises(ds.DesiredStateError, match="larger than"):
        ds.build_plan(str(big), INVENTORY)


def test_nesting_depth_limit_at_the_limit_and_one_level_beyond(tmp_path: Path) -> None:
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.models_yaml import ModelsLimits, load_yaml

    path = write(tmp_path, "schema: 1\nx: " + "[" * 15 + "]" * 15 + "\n")  # 16 levels with the top mapping
    load_yaml(path, ModelsLimits(max_depth=16))
    with pytest.raises(ds.DesiredStateError, match="nesting deeper than 15") as info:
        load_yaml(path, ModelsLimits(max_depth=15))
    assert (info.value.line, info.value.column) == (2, 18)  # the 15th "[" is the 16th level
    deep = write(tmp_path, "x: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ds.DesiredStateError, match="nesting deeper"):
        load_yaml(deep)


# ------------------------------------------------------------------------------------------------
# One version pattern, one wave count


def test_the_schema_version_pattern_is_the_runtimes() -> None:
    from edge_runtime.manifest import SEMVER_PATTERN, Version

    schema = json.loads((REPO / "schemas" / "models.schema.json").read_text())
    assert schema["$defs"]["semver"]["pattern"] == SEMVER_PATTERN
    with pytest.raises(Exception, match="not a semantic version"):
        Version.parse("1.2")


@pytest.mark.parametrize("pin", ["1.2", "1", "1.2.0.0"])
def test_a_version_the_runtime_refuses_is_refused_here(tmp_path: Path, registry: dict[str, Any], pin: str) -> None:
    text = render(registry).replace('defect-classifier: "1.0.0"', f'defect-classifier: "{pin}"')
    err = fails(tmp_path, text)
    assert err.line == line_of(text, f'"{pin}"')


def test_deploy_runs_exactly_max_waves_wave_plays() -> None:
    import yaml

    plays = yaml.safe_load((REPO / "playbooks" / "deploy.yml").read_text())
    waves = [p["vars"]["edge_wave"] for p in plays
             if str(p.get("ansible.builtin.import_playbook", "")).endswith("_wave.yml")]
    assert waves == list(range(1, ds.MAX_WAVES + 1))


def test_a_rollout_needing_more_waves_than_deploy_runs_is_refused(tmp_path: Path, registry: dict[str, Any]) -> None:
    hosts = [f"dev-a{i}" for i in range(1, 8)]
    groups = {**INVENTORY, "line_a": hosts}
    at_limit = render(registry).replace('waves: [1, "50%", "100%"]', 'waves: [1, 2, 3, 4, "100%"]')
    plan = ds.validate(write(tmp_path, at_limit), groups, check_registry=False)
    assert plan["max_wave"] == ds.MAX_WAVES
    beyond = render(registry).replace('waves: [1, "50%", "100%"]', 'waves: [1, 2, 3, 4, 5, "100%"]')
    err = _validate_error(tmp_path, beyond, groups, check_registry=False)
    assert err.line == line_of(beyond, "waves: [1, 2, 3")
    assert f"needs {ds.MAX_WAVES + 1} waves" in err.problem
    assert f"a deploy runs at most {ds.MAX_WAVES}" in err.problem


def _validate_error(tmp_path: Path, text: str, groups: dict[str, list[str]], **kw: Any) -> ds.DesiredStateError:
    with pytest.raises(ds.DesiredStateError) as info:
        ds.validate(write(tmp_path, text), groups, **kw)
    return info.value


# ------------------------------------------------------------------------------------------------
# Signatures with the devices' trusted keys, and the keys themselves (plugin_utils/trusted_keys.py)


def test_planned_bundles_verify_with_the_devices_keys(tmp_path: Path, registry: dict[str, Any]) -> None:
    plan = ds.validate(write(tmp_path, render(registry)), INVENTORY, trust=ds.Trust((registry["pub"],)))
    assert sorted((v["model"], v["version"]) for v in plan["verified"]) == [
        ("anomaly-detector", "0.3.0"), ("defect-classifier", "1.0.0"), ("defect-classifier", "1.1.0")]
    assert all(v["files"] == 2 for v in plan["verified"])


def test_a_bundle_signed_by_a_key_the_devices_do_not_trust_is_refused_at_its_line(
    tmp_path: Path, registry: dict[str, Any]
) -> None:
    other = make_keypair(tmp_path / "other", "other")
    text = render(registry)
    trust = {h: ds.Trust((registry["pub"],)) for h in INVENTORY["all"]}
    trust["dev-b2"] = ds.Trust((str(other.public_path),))  # one device of line_b trusts another key
    err = _validate_error(tmp_path, text, INVENTORY, trust=trust)
    assert "does not verify with the trusted keys of dev-b2" in err.problem
    assert err.line in (line_of(text, '"0.3.0"'), line_of(text, '"1.0.0"'))
    threshold = _validate_error(tmp_path, text, INVENTORY, trust=ds.Trust((registry["pub"], str(other.public_path)), 2))
    assert "1 valid signature(s) from trusted keys, 2 required" in threshold.problem


def _root(path: Path, version: int, root_key: Any, release: list[Any], signers: list[Any], threshold: int = 1) -> str:
    from datetime import datetime, timedelta, timezone

    from edge_runtime.manifest import Envelope
    from edge_runtime.root import make_root_signed, sign_root

    signed = make_root_signed(version, datetime.now(timezone.utc) + timedelta(days=30),
                              {"root": ([root_key.public], 1), "release": ([k.public for k in release], threshold)})
    path.write_bytes(sign_root(Envelope(signed, ()).to_bytes(), [k.private for k in signers]))
    return str(path)


def test_planned_bundles_verify_against_the_newest_trust_root_of_the_chain(
    tmp_path: Path, registry: dict[str, Any]
) -> None:
    """With edge_runtime_trust_root, bundles must satisfy the newest root's release role, as on the device."""
    from tests.support.keys import KeyPair

    release = KeyPair(Path(registry["key"]), Path(registry["pub"]))
    other = make_keypair(tmp_path / "other", "other")
    v1 = _root(tmp_path / "1.root.json", 1, release, [release], [release])
    text = render(registry)
    plan = ds.validate(write(tmp_path, text), INVENTORY, trust=ds.Trust((), 1, (v1,)))
    assert len(plan["verified"]) == 3
    # version 2 rotates the release key out: the registry's bundles no longer verify, named at their line
    v2 = _root(tmp_path / "2.root.json", 2, other, [other], [release, other])
    err = _validate_error(tmp_path, text, INVENTORY, trust=ds.Trust((), 1, (v1, v2)))
    assert "signed by unknown key" in err.problem
    # a chain with a gap, and keys and roots together, are refused before any bundle is read
    gap = _validate_error(tmp_path, text, INVENTORY, trust=ds.Trust((), 1, (v2,)))
    assert "starts at root version 2" in gap.problem
    both = _validate_error(tmp_path, text, INVENTORY, trust=ds.Trust((registry["pub"],), 1, (v1,)))
    assert "sets both edge_runtime_trusted_keys and edge_runtime_trust_root" in both.problem


def _private_key_files(tmp_path: Path, registry: dict[str, Any]) -> dict[str, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = ec.generate_private_key(ec.SECP256R1())
    files = {
        "pkcs8": Path(registry["key"]),
        "encrypted": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"secret")),
        "sec1": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()),
        "openssh": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                     serialization.NoEncryption()),
        "public+private": Path(registry["pub"]).read_bytes() + Path(registry["key"]).read_bytes(),
        "der-private": key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()),
        "garbage": b"hello world\n",
        "empty": b"",
        "rsa-public": rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "ssh-public": key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                    serialization.PublicFormat.OpenSSH),
        "public-with-text": b"Comment: release key\n" + Path(registry["pub"]).read_bytes(),
        "certificate": b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    }
    out = {}
    for name, data in files.items():
        if isinstance(data, Path):
            out[name] = data
            continue
        path = tmp_path / f"{name}.pem"
        path.write_bytes(data)
        out[name] = path
    return out


KEY_CASES = ["pkcs8", "encrypted", "sec1", "openssh", "public+private", "der-private", "garbage", "empty",
             "rsa-public", "ssh-public", "public-with-text", "certificate"]


@pytest.mark.parametrize("case", KEY_CASES)
def test_only_public_keys_are_trusted_and_a_refusal_never_shows_the_file(
    tmp_path: Path, registry: dict[str, Any], case: str
) -> None:
    path = _private_key_files(tmp_path, registry)[case]
    for check_registry in (True, False):  # keys are checked even without a registry check
        err = _validate_error(tmp_path, render(registry), INVENTORY, check_registry=check_registry,
                              trust=ds.Trust((registry["pub"], str(path))))
        assert err.file == str(path)
        assert str(err).startswith(f"{path}: ")
        content = path.read_bytes()
        for line in content.splitlines():
            if len(line.strip()) >= 8 and not line.startswith(b"-----"):
                assert line.decode("latin-1") not in str(err), "key material in the message"
        if case in ("pkcs8", "encrypted", "sec1", "openssh", "public+private"):
            assert "private key" in err.problem
            assert err.hint is not None
            assert "rotate" in err.hint


def test_a_missing_key_file_and_no_keys_at_all_are_refused(tmp_path: Path, registry: dict[str, Any]) -> None:
    missing = _validate_error(tmp_path, render(registry), INVENTORY, trust=ds.Trust((str(tmp_path / "nope.pub"),)))
    assert "not found" in missing.problem
    none = _validate_error(tmp_path, render(registry), INVENTORY, trust=ds.Trust(()))
    assert "no trusted keys" in none.problem
    twice = _validate_error(tmp_path, render(registry), INVENTORY, trust=ds.Trust((registry["pub"], registry["pub"])))
    assert "more than once" in twice.problem


# ------------------------------------------------------------------------------------------------
# scripts/validate_models.py (make validate) refuses what the deploy would refuse


def _inventory(tmp_path: Path, keys: list[str] | None, threshold: int = 1) -> Path:
    inv = tmp_path / "inventory.yml"
    groups = {g: {"hosts": dict.fromkeys(h)} for g, h in INVENTORY.items() if g not in ("all", "ungrouped")}
    variables = {} if keys is None else {"edge_runtime_trusted_keys": keys, "edge_runtime_threshold": threshold}
    inv.write_text(json.dumps({"all": {"vars": variables, "hosts": {"dev-c1": None}, "children": groups}}))
    return inv


def _script(models: str, inventory: Path, *extra: str) -> Any:
    import subprocess

    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "validate_models.py"), models, "-i", str(inventory), *extra],
        capture_output=True, text=True, check=False, timeout=120,
    )


def test_validate_script_keys_for_devices_without_their_own(tmp_path: Path, registry: dict[str, Any]) -> None:
    models = write(tmp_path, render(registry))
    none = _script(models, _inventory(tmp_path, None))
    assert none.returncode == 1
    assert "no trusted keys" in none.stderr
    given = _script(models, _inventory(tmp_path, None), "--trusted-key", registry["pub"], "--json")
    assert given.returncode == 0, given.stderr
    assert len(json.loads(given.stdout)["verified"]) == 3
    private = _script(models, _inventory(tmp_path, None), "--trusted-key", registry["key"])
    assert private.returncode == 1
    assert "holds a private key" in private.stderr


def test_validate_script_checks_signatures_with_the_inventorys_keys(tmp_path: Path, registry: dict[str, Any]) -> None:
    models = write(tmp_path, render(registry))
    good = _script(models, _inventory(tmp_path, [registry["pub"]]))
    assert good.returncode == 0, good.stderr
    other = make_keypair(tmp_path / "other", "other")
    bad = _script(models, _inventory(tmp_path, [str(other.public_path)]))
    assert bad.returncode == 1
    first_line = bad.stderr.splitlines()[0]
    expected = rf"{re.escape(models)}:\d+:\d+: bundle .* does not verify with the trusted keys"
    assert re.match(expected, first_line), bad.stderr
    threshold = _script(models, _inventory(tmp_path, [registry["pub"], str(other.public_path)], threshold=2))
    assert threshold.returncode == 1
    assert "2 required" in threshold.stderr


def test_validate_script_refuses_a_private_key_without_printing_it(tmp_path: Path, registry: dict[str, Any]) -> None:
    models = write(tmp_path, render(registry))
    r = _script(models, _inventory(tmp_path, [registry["pub"], registry["key"]]))
    assert r.returncode == 1
    assert r.stderr.startswith(f"{registry['key']}: holds a private key")
    body = [ln for ln in Path(registry["key"]).read_text().splitlines() if not ln.startswith("-----")]
    assert not any(ln in r.stdout + r.stderr for ln in body)


def test_a_public_key_is_passed_on_re_encoded_whatever_its_line_endings(
    tmp_path: Path, registry: dict[str, Any]
) -> None:
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.trusted_keys import read_public_key

    crlf = tmp_path / "crlf.pub"
    crlf.write_bytes(b"\n" + Path(registry["pub"]).read_bytes().replace(b"\n", b"\r\n") + b"\n\n")
    key = read_public_key(crlf)
    assert key.pem == Path(registry["pub"]).read_text()
    assert key.key_id == read_public_key(registry["pub"]).key_id


def test_number_length_at_the_limit_and_one_character_beyond(tmp_path: Path, registry: dict[str, Any]) -> None:
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.models_yaml import ModelsLimits, load_yaml

    limit = ModelsLimits().max_number_chars
    at = write(tmp_path, f"schema: 1\nx: {'9' * limit}\n")
    assert load_yaml(at)[0]["x"] == int("9" * limit)
    beyond = render(registry).replace("release_counter: 2", f"release_counter: {'9' * 5000}")
    err = fails(tmp_path, beyond)
    assert err.line == line_of(beyond, "release_counter: 999")
    assert "a number of 5000 characters" in err.problem


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN"])
def test_non_finite_numbers_are_refused_where_they_are(tmp_path: Path, registry: dict[str, Any], value: str) -> None:
    text = render(registry).replace("max_p95_latency_ms: 20.0", f"max_p95_latency_ms: {value}")
    err = fails(tmp_path, text)
    assert err.line == line_of(text, "max_p95_latency_ms")
    assert "not a finite number" in err.problem


@pytest.mark.parametrize(("snippet", "phrase"), [
    ("x: !!python/object:os.system 'ls'", "could not determine a constructor"),
    ("x: !custom value", "could not determine a constructor"),
    ("x: a\x00b", "U+0000 is not allowed"),
])
def test_unsafe_tags_and_control_characters_are_refused_where_they_are(
    tmp_path: Path, snippet: str, phrase: str
) -> None:
    err = fails(tmp_path, f"schema: 1\n{snippet}\n")
    assert err.line == 2
    assert phrase in err.problem


@pytest.mark.parametrize(("percent", "hosts", "first_wave"), [
    (50, 4, 2), (51, 4, 3),        # exactly two devices, one step beyond rounds up to three
    (25, 4, 1), (26, 4, 2),
    (10, 10, 1), (11, 10, 2),
    (1, 100, 1), (2, 100, 2), (3, 100, 3),
    (29, 100, 29), (57, 100, 57),  # where float percent * n / 100 is not an integer in binary
    (1, 1, 1), (100, 7, 7),
])
def test_percentage_waves_round_up_exactly_at_each_device_boundary(percent: int, hosts: int, first_wave: int) -> None:
    names = [f"h{i:03d}" for i in range(hosts)]
    waves = ds.resolve_waves([f"{percent}%", "100%"], names)
    assert len(waves[0]) == first_wave
    assert sum(len(w) for w in waves) == hosts


def test_a_bundle_whose_file_was_altered_after_signing_is_refused_at_its_line(
    tmp_path: Path, registry: dict[str, Any]
) -> None:
    import shutil

    reg = tmp_path / "registry"
    shutil.copytree(registry["registry"], reg)
    bundle = reg / registry["b_dc110"]
    data = bytearray(bundle.read_bytes())
    at = data.rfind(b"not really a model")  # the model file's bytes inside the tar, after the signed manifest
    assert at > 0
    data[at] ^= 0x01
    bundle.write_bytes(bytes(data))
    text = render(registry, registry=str(reg))
    err = _validate_error(tmp_path, text, INVENTORY, trust=ds.Trust((registry["pub"],)))
    assert err.line == line_of(text, f"bundle: {registry['b_dc110']}")
    assert "does not verify" in err.problem
    assert "model.tflite" in err.problem


def test_keys_are_checked_for_every_device_and_only_for_devices(tmp_path: Path, registry: dict[str, Any]) -> None:
    """Planned hosts and the edge_devices group get the runtime role (and its keys); other hosts do not."""
    models = write(tmp_path, render(registry))
    pinned = {g: {"hosts": dict.fromkeys(h)} for g, h in INVENTORY.items() if g not in ("all", "ungrouped")}

    def inventory(dev_c1_keys: list[str]) -> Path:
        inv = tmp_path / "mixed.yml"
        inv.write_text(json.dumps({"all": {
            "vars": {"edge_runtime_trusted_keys": [registry["pub"]]},
            "children": {
                "edge_devices": {"children": pinned,
                                 "hosts": {"dev-c1": {"edge_runtime_trusted_keys": dev_c1_keys}}},
                "monitoring": {"hosts": {"mon1": {"edge_runtime_trusted_keys": "not a list, and not a device"}}},
            }}}))
        return inv

    ok = _script(models, inventory([registry["pub"]]))
    assert ok.returncode == 0, ok.stderr
    unplanned_device = _script(models, inventory([registry["key"]]))  # dev-c1 pins nothing but gets the keys
    assert unplanned_device.returncode == 1
    assert unplanned_device.stderr.startswith(f"{registry['key']}: holds a private key")


@pytest.mark.parametrize(("keys", "threshold", "phrase"), [
    ("/a/single/string.pub", 1, "must be a list"),
    ({"a": 1}, 1, "must be a list"),
    (["/k.pub"], "two", "whole number"),
    (["/k.pub"], True, "whole number"),
    (["/k.pub"], 1.5, "whole number"),
])
def test_a_devices_trust_variables_of_the_wrong_shape_are_named(keys: Any, threshold: Any, phrase: str) -> None:
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.registry import device_trust

    with pytest.raises(ds.DesiredStateError, match=phrase) as info:
        device_trust("dev-a1", keys, threshold, str)
    assert info.value.file == "dev-a1"
    assert device_trust("dev-a1", ["~/k.pub"], "2", str).threshold == 2


def test_a_private_key_is_refused_before_the_registry_is_read(tmp_path: Path, registry: dict[str, Any]) -> None:
    text = render(registry, registry=str(tmp_path / "no-such-registry"))
    err = _validate_error(tmp_path, text, INVENTORY, trust=ds.Trust((registry["key"],)))
    assert "holds a private key" in err.problem


# ------------------------------------------------------------------------------------------------
# rollout.live_gate (the live canary gate; defaults and verdict in plugin_utils/live_gate.py)


def test_live_gate_block_reaches_the_plan_with_its_defaults(tmp_path: Path, registry: dict[str, Any]) -> None:
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.live_gate import DEFAULT_LIVE_GATE

    text = render(registry).replace(
        "      health_gate: {require_smoke_pass: true, max_p95_latency_ms: 20.0}\n",
        "      health_gate: {require_smoke_pass: true, max_p95_latency_ms: 20.0}\n"
        "      live_gate:\n        bake_seconds: 120\n        halt_at_error_rate_increase: 0.03\n", 1)
    plan = ds.build_plan(write(tmp_path, text), INVENTORY)
    live = plan["groups"]["line_a"]["policy"]["live_gate"]
    assert live == {**DEFAULT_LIVE_GATE, "bake_seconds": 120, "halt_at_error_rate_increase": 0.03,
                    "extend_seconds": 120}
    assert "live_gate" not in plan["groups"]["line_b"]["policy"]  # no block: no bake, the plan as before


@pytest.mark.parametrize(("entry", "problem"), [
    ("bake_seconds: -1", "groups.line_a.rollout.live_gate.bake_seconds must be >= 0, not -1"),
    ("min_samples: 2.5", "groups.line_a.rollout.live_gate.min_samples must be an integer, not a number (2.5)"),
    ("min_samples: 0", "groups.line_a.rollout.live_gate.min_samples must be >= 1, not 0"),
    ("halt_at_error_rate_increase: 1.5", "halt_at_error_rate_increase must be <= 1, not 1.5"),
    ("poll_seconds: 0", "groups.line_a.rollout.live_gate.poll_seconds must be > 0, not 0"),
    ("on_insufficient_data: pass", "on_insufficient_data must be one of 'halt', 'extend', not 'pass'"),
    ("halt_at_p95_ratio: 2", "unknown key 'halt_at_p95_ratio' in groups.line_a.rollout.live_gate"),
])
def test_live_gate_errors_are_located(tmp_path: Path, registry: dict[str, Any], entry: str, problem: str) -> None:
    text = render(registry).replace(
        "      health_gate: {require_smoke_pass: true, max_p95_latency_ms: 20.0}\n",
        "      health_gate: {require_smoke_pass: true, max_p95_latency_ms: 20.0}\n"
        f"      live_gate:\n        min_feedback: 10\n        {entry}\n", 1)
    err = fails(tmp_path, text)
    assert err.line == line_of(text, entry), err
    assert problem in err.problem, err
