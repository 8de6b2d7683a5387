#!/usr/bin/python
# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation of the ``edgeml.fleet.desired_state`` action plugin (the work is done on the controller).

Documentation only, as for ansible.builtin.debug: the action plugin
``plugins/action/desired_state.py`` runs every task.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: desired_state
short_description: Validate the fleet's desired model state (models.yaml) and plan the rollout
version_added: 0.1.0
description:
  - Reads C(models.yaml), the desired state of the edge fleet, validates it before anything touches a
    device, and returns the rollout plan that the deploy playbooks follow.
  - Validation covers YAML syntax and duplicate keys, the JSON Schema C(schemas/models.schema.json)
    (unknown keys are rejected everywhere, versions are exact pins), model and version pins against the
    catalogue, groups against the inventory, wave lists, release counters that must increase with the
    version, devices that two groups would give different versions of one model and, unless
    O(check_registry=false), the digest, name, version, release counter and (if given) size of every catalogued
    bundle in the registry.
  - >-
    Every failure names the file, line and column of the offending YAML node, the problem and a hint,
    for example C(models.yaml:14:7: defect-classifier 1.2.0 is not in the catalogue
    (hint: available versions: 1.0.0, 1.1.0)).
  - >-
    This is an action plugin; it runs on the controller only, so use it with C(run_once: true).
  - Wave membership is deterministic and independent of inventory order; devices are ordered by
    C(sha256("<group>/<model=version,...>/<host>")), so each promotion picks a different canary.
    Waves are cumulative targets, percentages round up to at least one device, empty waves are dropped
    and devices left over by the last wave form a final wave.
  - >-
    Without C(rollout), a group uses C(waves=[1, "100%"]), C(max_fail_percent=0) and
    C(health_gate={require_smoke_pass: true}).
  - A device in several groups gets the union of their pins and is rolled out once, with the first of
    those groups by name (its RV(plan.hosts.rollout_group)). Devices in no group of C(models.yaml) get
    no entry in the plan and are left alone.
extends_documentation_fragment:
  - edgeml.fleet.controller
options:
  path:
    description:
      - Path of C(models.yaml) on the controller. A relative path is relative to the playbook directory.
    type: path
    required: true
  groups:
    description:
      - The inventory groups, group name to list of host names. Pass the magic variable C({{ groups }}).
      - The implicit groups C(all) and C(ungrouped) are ignored.
    type: dict
    required: true
  check_registry:
    description:
      - Look up every catalogued bundle in the registry and compare its manifest with the catalogue
        entry. For an http(s) registry only the beginning of each bundle (the manifest) is downloaded.
      - Signatures are verified only with O(verify_bundles).
    type: bool
    default: true
  verify_bundles:
    description:
      - Check what every device trusts and verify what the plan would install with it, the way the devices
        will. A device trusts the key files of its own C(edge_runtime_trusted_keys) host variable (else
        O(trusted_keys)) with its C(edge_runtime_threshold) (else O(threshold)).
      - Every key file of every device (the planned hosts and the members of the C(edge_devices) group, which
        get the C(edge_runtime) role) must hold exactly one ECDSA P-256 PUBLIC KEY; a private key (or anything
        else) fails here, naming the file and never showing its content, before any device is touched. A
        device without keys fails too. Other hosts of the inventory are not asked.
      - Every bundle of the plan is verified with the trust of each device that would install it, once per
        bundle and trust; a local file in full (signatures, then every file's size and SHA-256), an http(s)
        bundle by its manifest's signatures (the devices verify its files after the download). Its manifest
        digest is compared with the pin. A failure is located at the catalogue entry's line.
      - The same checks as C(scripts/validate_models.py) (C(make validate)), which calls the same function.
    type: bool
    default: false
  trusted_keys:
    description:
      - Controller paths of trusted public keys (PEM), for devices without their own C(edge_runtime_trusted_keys).
    type: list
    elements: path
    default: []
  trust_root:
    description:
      - Controller paths of the trust root documents (the chain), for devices without their own
        C(edge_runtime_trust_root); bundles must satisfy the newest version's release role (docs/KEYS.md).
    type: list
    elements: path
    default: []
  threshold:
    description: Distinct trusted signatures a bundle needs, for devices without their own C(edge_runtime_threshold).
    type: int
    default: 1
  max_waves:
    description:
      - Refuse a plan whose rollout needs more waves than this. The default is the number of wave plays of
        C(playbooks/deploy.yml) (C(MAX_WAVES) in C(plugins/plugin_utils/waves.py), kept equal by a test).
      - C(0) turns the limit off (C(playbooks/rollback.yml), which rolls back without waves).
    type: int
    default: 5
attributes:
  check_mode:
    description: Validates and reads only, so it runs normally in check mode.
    support: full
notes:
  - The action plugin never changes anything; C(changed) is always false.
  - Requires C(pyyaml), C(jsonschema) and the C(edge_runtime) package on the controller.
"""

EXAMPLES = r"""
- name: Validate models.yaml and plan the rollout
  edgeml.fleet.desired_state:
    path: "{{ playbook_dir }}/../models.yaml"
    groups: "{{ groups }}"
  run_once: true
  register: desired

- name: Validate only the file and the inventory (no registry access, e.g. in CI)
  edgeml.fleet.desired_state:
    path: models.yaml
    groups: "{{ groups }}"
    check_registry: false
  run_once: true

- name: Install wave 1 only
  ansible.builtin.debug:
    msg: "{{ desired.plan.hosts[inventory_hostname].models }}"
  when:
    - inventory_hostname in desired.plan.hosts
    - desired.plan.hosts[inventory_hostname].wave == 1
"""

RETURN = r"""
plan:
  description: The rollout plan. JSON-serialisable; the contract with the deploy playbooks.
  returned: success
  type: dict
  contains:
    models_file:
      description: Absolute path of the validated C(models.yaml).
      type: str
      sample: /srv/fleet/models.yaml
    registry:
      description: Absolute registry directory, or the registry URL as written.
      type: str
      sample: /srv/fleet/.state/registry
    hosts:
      description:
        - Host name to its desired state. Hosts that no group of C(models.yaml) pins have no entry.
      type: dict
      contains:
        groups:
          description: The groups of C(models.yaml) that hold the host, sorted by name.
          type: list
          elements: str
          sample: [line_a]
        rollout_group:
          description: The group whose waves and policy roll the host out (the first of RV(plan.hosts.groups)).
          type: str
          sample: line_a
        wave:
          description: 1-based wave of the host within its rollout group.
          type: int
          sample: 1
        models:
          description:
            - Model name to the pinned release, with C(version), C(digest) (C(sha256:<hex>) of the signed manifest),
              C(release_counter), C(size) (bytes; from models.yaml, else as measured in the registry, else null)
              and C(source) (absolute path or URL of the bundle).
          type: dict
          sample:
            defect-classifier:
              version: 1.1.0
              digest: "sha256:8f2c0a..."
              release_counter: 2
              size: 123456
              source: /srv/fleet/.state/registry/defect-classifier/1.1.0.edgebundle
      sample: {}
    groups:
      description:
        - >-
          Group name to its rollout: C(hosts) (the hosts it rolls out, sorted), C(waves) (list of host lists,
          in order) and C(policy) (C(waves) as written, C(max_fail_percent), C(health_gate) with every key
          present; unset thresholds are null).
      type: dict
      sample:
        line_a:
          hosts: [dev-a1, dev-a2, dev-a3]
          waves: [[dev-a3], [dev-a1], [dev-a2]]
          policy:
            waves: [1, "50%", "100%"]
            max_fail_percent: 0
            health_gate:
              require_smoke_pass: true
              max_p95_latency_ms: 20.0
              max_error_rate_increase: null
              min_mean_confidence: null
    max_wave:
      description: The largest number of waves of any group (0 when nothing is pinned).
      type: int
      sample: 3
verified:
  description:
    - The bundles verified with O(verify_bundles) (empty without it), once per bundle and trust; C(files) is
      the number of files verified (null for an http(s) bundle, whose manifest signatures only were), C(hosts)
      how many devices would install it with that trust.
  returned: success
  type: list
  elements: dict
  sample: [{source: /srv/fleet/.state/registry/defect-classifier/1.1.0.edgebundle, model: defect-classifier,
            version: 1.1.0, files: 4, hosts: 12, threshold: 1}]
error:
  description: Where and what the problem is (on failure); C(msg) holds the same as one line.
  returned: failure
  type: dict
  sample:
    file: models.yaml
    line: 14
    column: 7
    problem: defect-classifier 1.2.0 is not in the catalogue
    hint: "available versions: 1.0.0, 1.1.0"
"""
