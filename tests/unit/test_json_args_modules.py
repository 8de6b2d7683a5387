"""The device modules' JSON-args protocol (``edge_runtime/ansible_module.py``), on its own and end to end.

End to end means: Ansible's own ``modify_module`` writes hostile arguments into a real module's source, exactly
as ``ansible-playbook`` does before it pipes the module to a device, and the module runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.ansible_module import NO_LOG_MASK, DeviceModule, ModuleArgsError, parse_args
from tests.support.device_modules import build

REPO = Path(__file__).resolve().parents[2]

SPEC: dict[str, Any] = {
    "root": {"type": "path", "required": True},
    "keys": {"type": "list", "elements": "str", "default": [], "no_log": True},
    "files": {"type": "list", "elements": "path", "default": []},
    "unit": {"type": "dict", "options": {"dir": {"type": "path"}, "content": {"type": "str"}}},
    "run_id": {"type": "str"},
}

#: strings that would break a naive embedding of JSON in Python source
HOSTILE = ["'''", '"""', '\\', '\\"""', "a\nb", "\u2028", "é✓", "$HOME", "{{ x }}",
           "<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>", "'; import os; os._exit(3) #", '""" + str(1/0) + """']


def emitted(capsys: pytest.CaptureFixture[str], call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(SystemExit) as exc:
        call()
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one JSON document on one line, nothing else on stdout
    return int(exc.value.code or 0), json.loads(out)


# ---------------------------------------------------------------- parsing ---------------------------------


@pytest.mark.parametrize(("text", "problem"), [
    ("", "not JSON"),
    ("{", "not JSON"),
    ("<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>", "not JSON"),  # a module run without Ansible's substitution
    ("[]", "a JSON list, not an object"),
    ('{"root": ' + "[" * 200_000 + "]" * 200_000 + "}", "not JSON"),  # deeper than the parser's recursion
    ('{"root": "\\ud800"}' + "\x00", "not JSON"),
    ("null", "a JSON NoneType, not an object"),
    ('"root"', "a JSON str, not an object"),
    ('{"root": "/x", "extra": 1}', "unsupported option(s) extra"),
    ('{"root": "/x", "_ansible_check_mode": true, "b": 1, "a": 2}', "unsupported option(s) a, b"),
])
def test_arguments_that_are_not_an_object_of_the_options_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ModuleArgsError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_args(text, SPEC)


def test_every_option_is_present_and_internal_options_are_apart() -> None:
    params, internal = parse_args('{"root": "/r", "_ansible_check_mode": true, "_ansible_diff": false}', SPEC)
    assert params == {"root": "/r", "keys": None, "files": None, "unit": None, "run_id": None}
    assert internal == {"_ansible_check_mode": True, "_ansible_diff": False}


def test_paths_are_expanded_on_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/device")
    monkeypatch.setenv("EDGE_DIR", "/srv/edge")
    params, _ = parse_args(json.dumps({"root": "~/edge", "files": ["$EDGE_DIR/a", "b", 3],
                                       "unit": {"dir": "~/units", "content": "~/not-a-path"}, "run_id": "~"}), SPEC)
    assert params["root"] == "/home/device/edge"
    assert params["files"] == ["/srv/edge/a", "b", 3]  # a wrong type is left for the module to refuse
    assert params["unit"] == {"dir": "/home/device/units", "content": "~/not-a-path"}
    assert params["run_id"] == "~"  # only type: path is expanded


# ---------------------------------------------------------------- the exits --------------------------------


def test_exit_writes_one_json_result_with_invocation_and_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    module = DeviceModule(json.dumps({"root": "/r", "keys": ["PEM"], "_ansible_check_mode": True}), SPEC)
    assert module.check_mode is True
    assert module.diff_mode is False
    module.warn("facts file not written")
    rc, out = emitted(capsys, lambda: module.exit_json(path=Path("/a/b"), ids={"b", "a"}, other=object.__new__(object)))
    assert rc == 0
    assert out["changed"] is False
    assert out["path"] == "/a/b"
    assert out["ids"] == ["a", "b"]
    assert out["other"].startswith("<object object")
    assert out["warnings"] == ["facts file not written"]
    assert out["invocation"]["module_args"]["keys"] == NO_LOG_MASK  # a no_log option is never echoed
    assert out["invocation"]["module_args"]["root"] == "/r"


def test_fail_exits_1_with_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    module = DeviceModule('{"root": "/r"}', SPEC)
    assert module.check_mode is False
    rc, out = emitted(capsys, lambda: module.fail_json(msg="no space left", error="storage", changed=False))
    assert rc == 1
    assert out["failed"] is True
    assert out["msg"] == "no space left"
    assert out["error"] == "storage"
    assert out["invocation"]["module_args"]["keys"] is None  # nothing given: nothing to hide


def test_bad_arguments_fail_the_module_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = emitted(capsys, lambda: DeviceModule('{"root": "/r", "rootdir": "/x"}', SPEC))
    assert rc == 1
    assert out["error"] == "usage"
    assert "rootdir" in out["msg"]
    assert "reinstall the collection" in out["msg"]


# ---------------------------------------------------------------- end to end ------------------------------


def run_built(source: bytes, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-"], input=source, capture_output=True, timeout=60, check=False,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    assert proc.stderr == b"", proc.stderr.decode()
    return proc.returncode, json.loads(proc.stdout)


def test_hostile_arguments_reach_the_module_intact(tmp_path: Path) -> None:
    """Quotes, backslashes, the marker itself, code-like strings: the module reads exactly what was given."""
    source = build("edge_model_info", {"root": str(tmp_path), "name": HOSTILE, "run_id": "".join(HOSTILE),
                                       "telemetry": [], "baseline_minutes": 60, "_ansible_check_mode": True})
    assert b"_ansiballz_main" not in source  # the module itself, not an AnsiballZ wrapper
    assert source.startswith(f"#!{sys.executable}\n".encode())
    rc, out = run_built(source)
    assert rc == 0, out
    assert out["initialised"] is False
    assert out["models"] == {}
    assert out["invocation"]["module_args"]["name"] == HOSTILE
    assert out["facts"]["run_id"] == "".join(HOSTILE)


def test_a_device_without_the_runtime_gets_the_fix(tmp_path: Path) -> None:
    """An interpreter that cannot import edge_runtime: one failed result naming the interpreter and the role."""
    base = Path(sys.base_prefix) / "bin" / "python3"  # the interpreter this venv was made from
    if subprocess.run([base, "-I", "-c", "import edge_runtime"], capture_output=True, check=False).returncode == 0:
        pytest.skip(f"{base} can import edge_runtime: no interpreter without the runtime to try")
    source = build("edge_model", {"root": str(tmp_path), "name": "m", "state": "tested"}, python=base)
    proc = subprocess.run([base, "-I", "-"], input=source, capture_output=True, timeout=60, check=False, cwd=tmp_path)
    out = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert out["failed"] is True
    assert out["error"] == "missing_runtime"
    assert out["python"] == str(base)
    assert "edge_runtime" in out["import_error"]
    # the action plugin says the fix (one place for the four modules)
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.device_module import missing_runtime_message

    msg = missing_runtime_message(out)
    assert str(base) in msg
    assert "No module named 'edge_runtime'" in msg
    assert "edge_runtime role" in msg
    assert not list(tmp_path.iterdir())  # nothing on the device changed
