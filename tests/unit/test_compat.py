"""The compatibility decision (edge_runtime.compat): one owner for the device's install and the controller's plan."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils.plan_report import plan_markdown, plan_report

from edge_runtime import errors
from edge_runtime.compat import DeviceTraits, incompatibility, traits_from_twin
from edge_runtime.trust import check_install_policy
from tests.unit.test_plan_report import EXPIRES, VERIFIED, plan, row, twin
from tests.unit.test_trust_rules import ctx, manifest

ARCHS = ("x86_64", "aarch64")
BACKENDS = ("litert", "tflite-runtime")


def decide(arch: str = "aarch64", backends: tuple[str, ...] = ("litert",),
           contract: tuple[tuple[int, ...], str] | None = None) -> Any:
    return incompatibility("m", "1.1.0", ARCHS, BACKENDS, (1, 8), "float32", architecture=arch,
                           device_backends=backends, input_contract=contract)


def test_compatible_device_passes() -> None:
    assert decide() is None
    assert decide("x86_64", ("tflite-runtime",)) is None
    assert decide(contract=((1, 8), "float32")) is None


def test_each_reason_names_both_sides_and_the_fix() -> None:
    arch = decide("riscv64")
    assert arch is not None
    assert arch.reason == "m 1.1.0 supports architectures x86_64, aarch64, this device is riscv64"
    assert arch.hint == "build a bundle for this architecture"
    none = decide(backends=())
    assert none is not None
    assert none.reason == "m 1.1.0 needs backend litert or tflite-runtime, this device has none"
    other = decide(backends=("onnx",))
    assert other is not None
    assert other.reason.endswith("this device has onnx")
    shape = decide(contract=((1, 9), "float32"))
    assert shape is not None
    assert shape.reason == "m 1.1.0 takes input [1, 8] float32, this device provides [1, 9] float32"
    dtype = decide(contract=((1, 8), "int8"))
    assert dtype is not None
    assert "int8" in dtype.reason
    # the architecture is checked first, then the backend, then the input
    first = decide("riscv64", (), ((1, 9), "int8"))
    assert first is not None
    assert "architectures" in first.reason


def test_architecture_names_are_compared_exactly() -> None:
    for near in ("AARCH64", "aarch64 ", "arm64", ""):
        assert decide(near) is not None, near


@pytest.mark.parametrize(("kw", "device"), [({"architecture": "riscv64"}, ("riscv64", ("litert",))),
                                            ({"backends": ()}, ("x86_64", ())),
                                            ({"input_contract": ((1, 64, 64, 3), "float32")}, None)])
def test_the_runtime_refuses_with_the_decisions_reason_and_hint(kw: dict[str, Any], device: Any) -> None:
    m = manifest()
    c = ctx(**kw)
    why = incompatibility(m.name, str(m.version), m.architectures, m.backends, m.input_shape, m.input_dtype,
                          architecture=c.architecture, device_backends=c.backends, input_contract=c.input_contract)
    assert why is not None
    with pytest.raises(errors.IncompatibleError) as exc:
        check_install_policy(m, c)
    assert (exc.value.message, exc.value.hint) == (why.reason, why.hint)


def platform(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"architecture": "aarch64", "backends": ["litert"], "inputs": {}, "python": "3.11.2",
                            "machine": "aarch64"}
    base.update(kw)
    return base


def test_traits_from_a_twin_and_hostile_twins() -> None:
    assert traits_from_twin({"platform": platform(inputs={"m": {"shape": [1, 8], "dtype": "int8"}})}) == \
        DeviceTraits("aarch64", ("litert",), {"m": ((1, 8), "int8")})
    for bad in (None, {}, {"platform": None}, {"platform": platform(architecture=None)},
                {"platform": platform(architecture="")}, {"platform": platform(architecture=7)},
                {"platform": platform(backends="litert")}, {"platform": platform(backends=[1])},
                {"platform": platform(inputs=[])},
                {"platform": platform(inputs={"m": {"shape": [True], "dtype": "x"}})},
                {"platform": platform(inputs={"m": {"shape": [1], "dtype": 3}})}):
        assert isinstance(traits_from_twin(bad), str), bad


# ---- the plan asks the same decision ---------------------------------------------------------------------------

VERIFIED_FULL = [{**VERIFIED[0], "architectures": ["aarch64"], "backends": ["litert", "tflite-runtime"],
                  "input": {"shape": [1, 8], "dtype": "float32"}}]
NOW = EXPIRES - timedelta(days=1)


def with_platform(**kw: Any) -> dict[str, Any]:
    t = twin()
    t["d1"]["platform"] = platform(**kw)
    return t


def test_plan_compatible_device_passes() -> None:
    r = row(plan_report(plan(), with_platform(), {"d1"}, VERIFIED_FULL, now=NOW))
    assert r["checks"]["compatibility"] == {"result": "passed", "detail": "aarch64 with backend litert"}
    assert r["action"] == "install"


@pytest.mark.parametrize(("kw", "words"), [({"architecture": "x86_64"}, "this device is x86_64"),
                                           ({"backends": []}, "this device has none"),
                                           ({"inputs": {"m": {"shape": [1, 9], "dtype": "float32"}}},
                                            "this device provides [1, 9] float32")])
def test_plan_incompatible_device_fails_and_is_refused(kw: dict[str, Any], words: str) -> None:
    report = plan_report(plan(), with_platform(**kw), {"d1"}, VERIFIED_FULL, now=NOW)
    r = row(report)
    assert r["checks"]["compatibility"]["result"] == "failed"
    assert words in r["checks"]["compatibility"]["detail"]
    assert "(hint: " in r["checks"]["compatibility"]["detail"]
    assert (r["action"], r["code"], r["bytes"]) == ("refuse", "incompatible", 0)
    assert report["blocked"] == [r]
    assert "FAILED" in plan_markdown(report)


def test_plan_says_not_evaluated_without_twin_platform_or_manifest() -> None:
    unreachable = row(plan_report(plan(), with_platform(), set(), VERIFIED_FULL, now=NOW))
    assert unreachable["checks"]["compatibility"] == {"result": "not evaluated",
                                                      "detail": "no twin from this device in this run"}
    old_runtime = row(plan_report(plan(), twin(), {"d1"}, VERIFIED_FULL, now=NOW))
    assert old_runtime["checks"]["compatibility"]["result"] == "not evaluated"
    assert "no platform facts" in old_runtime["checks"]["compatibility"]["detail"]
    assert old_runtime["action"] == "install"
    unread = row(plan_report(plan(), with_platform(architecture="x86_64"), {"d1"}, [], now=NOW))
    assert unread["checks"]["compatibility"]["result"] == "not evaluated"
    assert unread["action"] == "install"
