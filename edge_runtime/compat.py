"""The compatibility decision: can this device run this bundle (architecture, TFLite backend, input contract)?

One pure function, :func:`incompatibility`, owns the question. Its callers therefore cannot disagree:

* the runtime, at install (``trust.check_install_policy``: it raises :class:`~edge_runtime.errors.IncompatibleError`
  with this reason and hint), with the device's configured architecture, the backends its interpreter can import
  and the input contract of its config;
* the controller's pull-request plan (``plugin_utils/plan_report.py``), with the same three facts as the device
  reported them in its twin (``facts.platform_facts``) and the bundle's signed manifest as the controller verified
  it (``plugin_utils/registry.py``).

A twin that does not carry the facts (an older runtime, a device that did not answer) is not decided here: the
caller says "not evaluated". Stdlib only: the controller imports it without the device-side dependencies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DeviceTraits", "Incompatibility", "incompatibility", "traits_from_twin"]


@dataclass(frozen=True)
class Incompatibility:
    """Why the device cannot run the bundle, and the fix."""

    reason: str
    hint: str

    def message(self) -> str:
        return f"{self.reason} (hint: {self.hint})"


@dataclass(frozen=True)
class DeviceTraits:
    """What compatibility is decided on, on the device's side."""

    architecture: str
    backends: tuple[str, ...]
    #: model name -> (shape, dtype): the input the device feeds that model, when configured
    inputs: Mapping[str, tuple[tuple[int, ...], str]]


def incompatibility(
    name: str,
    version: str,
    architectures: Sequence[str],
    backends: Sequence[str],
    input_shape: Sequence[int] | None,
    input_dtype: str | None,
    *,
    architecture: str,
    device_backends: Sequence[str],
    input_contract: tuple[Sequence[int], str] | None = None,
) -> Incompatibility | None:
    """None when a device of ``architecture`` with ``device_backends`` (feeding ``input_contract``) can run the
    bundle of ``name`` ``version`` whose manifest declares ``architectures``, ``backends`` and its input;
    else the first reason, in this order: architecture, backend, input."""
    if architecture not in architectures:
        return Incompatibility(
            f"{name} {version} supports architectures {', '.join(architectures)}, this device is {architecture}",
            "build a bundle for this architecture",
        )
    if not set(backends) & set(device_backends):
        return Incompatibility(
            f"{name} {version} needs backend {' or '.join(backends)}, this device has "
            f"{', '.join(device_backends) or 'none'}",
            "install a TFLite backend (ai-edge-litert or tflite-runtime) on the device",
        )
    if input_contract is not None:
        shape, dtype = input_contract
        if input_shape is None or tuple(shape) != tuple(input_shape) or dtype != input_dtype:
            return Incompatibility(
                f"{name} {version} takes input {list(input_shape or [])} {input_dtype}, "
                f"this device provides {list(shape)} {dtype}",
                "publish a model for this device's input, or change the device's input contract",
            )
    return None


def _str_list(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return None
    return tuple(value)


def traits_from_twin(twin: Any) -> DeviceTraits | str:
    """The device's traits from its twin's ``platform`` section (``facts.platform_facts``), or why they cannot be
    read (the twin is from an older runtime, or malformed: hostile input is never guessed at)."""
    platform = twin.get("platform") if isinstance(twin, Mapping) else None
    if not isinstance(platform, Mapping):
        return "the device's twin carries no platform facts (architecture, backends): runtime older than 0.2.0?"
    arch = platform.get("architecture")
    backends = _str_list(platform.get("backends"))
    if not isinstance(arch, str) or not arch or backends is None:
        return "the device's twin has no readable architecture or backend list"
    inputs: dict[str, tuple[tuple[int, ...], str]] = {}
    raw = platform.get("inputs")
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        return "the device's twin has an unreadable input contract"
    for model, spec in raw.items():
        shape = spec.get("shape") if isinstance(spec, Mapping) else None
        dtype = spec.get("dtype") if isinstance(spec, Mapping) else None
        if (not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                            for d in shape) or not isinstance(dtype, str)):
            return f"the device's twin has an unreadable input contract for {model!r}"
        inputs[str(model)] = (tuple(shape), dtype)
    return DeviceTraits(arch, backends, inputs)
