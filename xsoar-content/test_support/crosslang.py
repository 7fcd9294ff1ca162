#!/usr/bin/env python3
"""Cross-language check: the XSOAR integration's own client code against a running Case Archiver.

    ARCHIVER_URL=http://127.0.0.1:8080 ARCHIVER_WEBHOOK_SECRET=whsec_... \\
        python3 xsoar-content/test_support/crosslang.py INCIDENT_ID [--no-wait] [--verify] ...

Steps, each with the integration's Client (signing, retries, error handling exactly as in XSOAR):
  1. GET /v1/whoami, which must grant the roles trigger and read;
  2. POST /v1/incidents/{id}/archive (wait=true unless --no-wait), reason "manual" by default; checks
     the status (201 finished / 202 accepted), the Location header and the Job shape;
  3. GET /v1/jobs/{job_id}, polling until the job is succeeded or failed (within ARCHIVER_TIMEOUT);
  4. with --verify: GET /v1/incidents/{id}/archives and POST .../archives/latest/verify.
Prints the final job JSON on stdout (progress on stderr).

Environment: ARCHIVER_URL (required); ARCHIVER_WEBHOOK_SECRET (whsec_..., or ARCHIVER_BEARER_TOKEN
instead); ARCHIVER_TIMEOUT total seconds (default 120); ARCHIVER_INSECURE=true to skip TLS checks.

Exit status: 0 the job succeeded (and verified, with --verify); 1 an HTTP, auth or contract error;
2 the job failed or did not finish in time (0 instead with --allow-failed when it failed).
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.normpath(os.path.join(HERE, "..", "Packs", "CaseArchiver", "Integrations", "CaseArchiver"))
for p in (HERE, INTEGRATION):  # HERE provides the demistomock / CommonServerPython stand-ins
    if p not in sys.path:
        sys.path.insert(0, p)

import CaseArchiver as ca  # noqa: E402

JOB_KEYS = ("job_id", "incident_id", "state", "attempts", "created_at", "request")


class ContractError(Exception):
    pass


def log(msg):
    print(f"crosslang: {msg}", file=sys.stderr, flush=True)


def check_job(job, incident_id, where):
    missing = [k for k in JOB_KEYS if k not in job]
    if missing:
        raise ContractError(f"{where}: job lacks {missing}: {job}")
    if job["state"] not in ca.JOB_STATES:
        raise ContractError(f"{where}: unknown state {job['state']!r}")
    if str(job["incident_id"]) != incident_id:
        raise ContractError(f"{where}: job is for incident {job['incident_id']!r}, expected {incident_id!r}")
    if job["state"] == "succeeded":
        result = job.get("result") or {}
        for k in ("version", "manifest_path"):
            if not result.get(k):
                raise ContractError(f"{where}: succeeded job has no result.{k}: {job}")


def header(headers, name):
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def run(opts):
    url = os.environ.get("ARCHIVER_URL", "")
    secret = os.environ.get("ARCHIVER_WEBHOOK_SECRET") or None
    token = os.environ.get("ARCHIVER_BEARER_TOKEN") or None
    timeout = float(os.environ.get("ARCHIVER_TIMEOUT") or 120)
    insecure = (os.environ.get("ARCHIVER_INSECURE") or "").lower() in ("1", "true", "yes")
    if not url or not (secret or token):
        raise ca.DemistoException("set ARCHIVER_URL and ARCHIVER_WEBHOOK_SECRET (or ARCHIVER_BEARER_TOKEN)")
    deadline = time.monotonic() + timeout
    client = ca.Client(url, webhook_secret=secret, bearer_token=None if secret else token, verify=not insecure,
                       proxy=False, timeout=timeout, log=log)
    incident_id = ca.normalize_incident_id(opts.incident_id)

    who = client.whoami()
    log(f"whoami: {json.dumps(who)}")
    roles = set(who.get("roles") or [])
    if "admin" not in roles and not {"trigger", "read"} <= roles:
        raise ContractError(f"whoami: roles {who.get('roles')} lack trigger/read")

    status, job = client.archive(opts.incident_id, reason=opts.reason, alert_id=opts.alert_id or "",
                                 requested_by="crosslang", force=opts.force, wait=not opts.no_wait,
                                 timeout=max(1.0, deadline - time.monotonic()))
    log(f"archive: HTTP {status}, job {job.get('job_id')} {job.get('state')}")
    check_job(job, incident_id, "archive")
    if status not in (201, 202):
        raise ContractError(f"archive: expected 201 or 202, got {status}")
    if status == 201 and job["state"] not in ("succeeded", "failed"):
        raise ContractError(f"archive: 201 with unfinished state {job['state']}")
    if status == 202 and job["state"] not in ("queued", "running", "succeeded", "failed"):
        raise ContractError(f"archive: 202 with state {job['state']}")
    location = header(client.last_headers, "Location")
    if location != f"/v1/jobs/{job['job_id']}":
        raise ContractError(f"archive: Location {location!r}, expected /v1/jobs/{job['job_id']}")

    delay = 0.2
    while True:
        got = client.get_job(job["job_id"])
        check_job(got, incident_id, "get job")
        if got["job_id"] != job["job_id"]:
            raise ContractError(f"get job: asked for {job['job_id']}, got {got['job_id']}")
        if got["state"] in ("succeeded", "failed"):
            break
        if time.monotonic() + delay > deadline:
            print(json.dumps(got, indent=2, sort_keys=True))
            log(f"job {got['job_id']} still {got['state']} after {timeout:g}s")
            return 2
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    log(f"job {got['job_id']}: {got['state']}" + (f" ({got.get('error')})" if got.get("error") else ""))

    if opts.verify and got["state"] == "succeeded":
        archives = client.list_archives(incident_id)
        versions = [v.get("version") for v in archives.get("versions") or []]
        log(f"archives: {versions}")
        if got["result"]["version"] not in versions and not got["result"].get("skipped"):
            raise ContractError(f"list archives: job version {got['result']['version']} not in {versions}")
        ver = client.verify(incident_id, "latest")
        log(f"verify: {ver.get('status')} checked={ver.get('checked')} ok={ver.get('ok')}")
        if ver.get("status") != "ok":
            print(json.dumps(got, indent=2, sort_keys=True))
            raise ContractError(f"verify: {json.dumps(ver)}")

    print(json.dumps(got, indent=2, sort_keys=True))
    if got["state"] == "failed" and not opts.allow_failed:
        return 2
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description="Drive a Case Archiver server with the XSOAR integration's client.")
    ap.add_argument("incident_id", help="decimal id or INCIDENT-<n>")
    ap.add_argument("--no-wait", action="store_true", help="trigger without ?wait=true, then poll the job")
    ap.add_argument("--reason", default="manual")
    ap.add_argument("--alert-id", default="")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--verify", action="store_true", help="also list the archives and verify the latest")
    ap.add_argument("--allow-failed", action="store_true", help="exit 0 when the job ran but failed")
    opts = ap.parse_args(argv)
    try:
        return run(opts)
    except (ca.DemistoException, ContractError) as e:
        log(f"FAILED: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
