#!/usr/bin/env bash
# One model release through Modelgate, one stage per CI job (github-actions.yml and
# gitlab-ci.yml both call this, so the commands live in one place):
#
#   release.sh register     create the model if needed, push ./model as a new version,
#                           wait until the workers made it ready
#   release.sh staging      promote it to staging and wait until it is live there
#   release.sh production   request production and wait while a reviewer decides
#   release.sh deploy       resolve production to a version, pull and check its files
#
# Needs MODELGATE_URL and MODELGATE_TOKEN (a CI user's token with read and write
# scopes; reviewers approve with their own). Exits with modelgate's code: 0 done,
# 1 error, 2 refused (permission, a gate, a rejection), 3 timed out.
set -euo pipefail

: "${MODELGATE_URL:?set MODELGATE_URL to the registry, e.g. https://modelgate.example.com}"
: "${MODELGATE_TOKEN:?set MODELGATE_TOKEN to a CI token (a masked secret)}"
MODEL=${MODEL:-fraud}                     # the registered model
MODEL_DIR=${MODEL_DIR:-model}             # the folder the training step wrote
METRICS=${METRICS:-metrics.json}          # {"accuracy": 0.93, ...}, checked by the gates
DEPLOY_DIR=${DEPLOY_DIR:-deploy}
RELEASE_ENV=${RELEASE_ENV:-release.env}   # hands MODEL_VERSION=name/N to later jobs
COMMIT=${CI_COMMIT_SHA:-${GITHUB_SHA:-unknown}}
COMMENT="CI release of $COMMIT"

# The version this pipeline registered: from the job's environment (a GitHub job
# output, a GitLab dotenv report) or from the file the register stage wrote.
version() {
  local found=${MODEL_VERSION:-}
  if [ -z "$found" ] && [ -f "$RELEASE_ENV" ]; then
    found=$(sed -n 's/^MODEL_VERSION=//p' "$RELEASE_ENV")
  fi
  if [ -z "$found" ]; then
    echo "MODEL_VERSION is not set and $RELEASE_ENV holds none: run the register stage." >&2
    exit 1
  fi
  echo "$found"
}

case "${1:-}" in
register)
  modelgate models create "$MODEL" --exist-ok >&2
  lineage=(--lineage "code_commit=$COMMIT")
  if [ -n "${CI_PIPELINE_URL:-}" ]; then
    lineage+=(--lineage "run_url=$CI_PIPELINE_URL")
  elif [ -n "${GITHUB_RUN_ID:-}" ]; then
    lineage+=(--lineage "run_url=$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID")
  fi
  pushed=$(modelgate --quiet push "$MODEL_DIR" --model "$MODEL" --metrics "$METRICS" \
    "${lineage[@]}" --description "$COMMENT")
  echo "MODEL_VERSION=$pushed" >"$RELEASE_ENV"
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    echo "MODEL_VERSION=$pushed" >>"$GITHUB_OUTPUT"
  fi
  modelgate wait "$pushed" --state ready --timeout "${READY_TIMEOUT:-1800}"
  ;;
staging)
  release=$(version)
  modelgate promote "$release" --to staging --comment "$COMMENT" \
    --wait --timeout "${PROMOTE_TIMEOUT:-600}"
  ;;
production)
  release=$(version)
  # Blocks until a reviewer approves (then waits for the worker to move the alias);
  # a rejection or a failed gate exits 2, no decision within the timeout exits 3.
  modelgate promote "$release" --to production --comment "$COMMENT" \
    --wait-for-review --timeout "${REVIEW_TIMEOUT:-3600}"
  ;;
deploy)
  resolved=$(modelgate resolve "$MODEL@production")
  live=$(head -n 1 <<<"$resolved")
  # Pull the number, not the alias, so a promotion meanwhile cannot mix two versions.
  modelgate --quiet pull "$live" "$DEPLOY_DIR"
  # pull already checked every sha256; resolve's list serves plain tools as well.
  (cd "$DEPLOY_DIR" && tail -n +2 <<<"$resolved" | sha256sum --check --quiet)
  echo "Deployed $live into $DEPLOY_DIR."
  ;;
*)
  echo "usage: $0 register|staging|production|deploy" >&2
  exit 2
  ;;
esac
