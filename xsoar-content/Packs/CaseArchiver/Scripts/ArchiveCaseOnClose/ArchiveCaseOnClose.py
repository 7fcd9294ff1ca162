"""Post-processing script: ask the Case Archiver service to archive a case when it is closed.

Wire it as the incident type's "Post process using" script (closureScript). It reads the closing
incident, works out the case id (on XSIAM the parent case of the alert, parentXDRIncident such as
"INCIDENT-5"; on XSOAR 8 the incident id), and runs the integration command
case-archiver-archive-incident with reason "incident_closed". The integration holds the secret,
signs the request and retries; this script never talks HTTP itself.

Failure policy (argument block_close_on_failure, default false): an archiving failure is written to
the war room as a note and the close proceeds; with true the script returns an error, which makes
XSOAR/XSIAM refuse the close. The call is bounded by archive_timeout (passed to the command as its
total time budget), which stays below the script's own timeout, so the script cannot hang the close.
"""
import demistomock as demisto  # noqa: F401
from CommonServerPython import *  # noqa: F401,F403

import re
from datetime import datetime, timezone
from typing import Any

COMMAND = "case-archiver-archive-incident"
DEFAULT_ARCHIVE_TIMEOUT = 30  # seconds; the script YAML timeout is 60s
MAX_ARCHIVE_TIMEOUT = 50
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class ArchiveFailed(Exception):
    pass


def is_xsiam() -> bool:
    try:
        return (demisto.demistoVersion() or {}).get("platform") == "x2"
    except Exception:
        return False


def case_ids(incident: dict) -> tuple[str, str]:
    """Returns (case id to archive, alert id or "").

    XSIAM: demisto.incident() is the alert; its case is parentXDRIncident ("INCIDENT-5"), passed on as
    is (the integration and the server accept both "INCIDENT-5" and "5"). XSOAR 8: the incident id.
    """
    alert_or_incident_id = str(incident.get("id") or "").strip()
    parent = incident.get("parentXDRIncident") or (incident.get("CustomFields") or {}).get("parentxdrincident")
    parent = str(parent or "").strip()
    if parent:
        return parent, alert_or_incident_id
    if is_xsiam():
        raise ArchiveFailed(f"alert {alert_or_incident_id or '?'} has no parent case (parentXDRIncident is empty), "
                            "so there is no case to archive")
    if not alert_or_incident_id:
        raise ArchiveFailed("the incident has no id")
    return alert_or_incident_id, ""


def closed_at(incident: dict) -> str:
    """The close time if the incident already carries a real one, else now (UTC, RFC 3339)."""
    value = str(incident.get("closed") or "").strip()
    if value and _RFC3339.match(value) and not value.startswith("0001-"):
        return value
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def archive_timeout(args: dict) -> int:
    t = arg_to_number(args.get("archive_timeout"), "archive_timeout") or DEFAULT_ARCHIVE_TIMEOUT
    return max(1, min(int(t), MAX_ARCHIVE_TIMEOUT))


def request_archive(incident: dict, args: dict) -> tuple[str, str, dict]:
    """Runs the integration command; returns (case id, alert id, job). Raises ArchiveFailed."""
    case_id, alert_id = case_ids(incident)
    cmd_args: dict[str, Any] = {
        "incident_id": case_id,
        "reason": "incident_closed",
        "closed_at": closed_at(incident),
        "wait": "true" if argToBoolean(args.get("wait") or "false") else "false",
        "timeout": str(archive_timeout(args)),
    }
    if alert_id:
        cmd_args["alert_id"] = alert_id
    user = str(incident.get("closingUserId") or "").strip()
    if user:
        cmd_args["requested_by"] = user
    if args.get("using"):
        cmd_args["using"] = args["using"]
    try:
        res = demisto.executeCommand(COMMAND, cmd_args)
    except Exception as e:  # e.g. the command is unknown because no instance is enabled
        raise ArchiveFailed(f"{COMMAND} could not run: {e}")
    if isError(res):
        raise ArchiveFailed(get_error(res))
    job: dict = {}
    for entry in res if isinstance(res, list) else [res]:
        if isinstance(entry, dict) and isinstance(entry.get("Contents"), dict) and entry["Contents"].get("job_id"):
            job = entry["Contents"]
    if job.get("state") == "failed":
        raise ArchiveFailed(f"archive job {job.get('job_id')} failed: {job.get('error') or 'no detail'}")
    return case_id, alert_id, job


def main() -> None:
    args = demisto.args() or {}
    # closeNotes may be missing, None or "" (an empty closeNotes once broke content scripts): read defensively.
    close_notes = str(args.get("closeNotes") or "")
    close_reason = str(args.get("closeReason") or "")
    try:
        block = argToBoolean(args.get("block_close_on_failure") or "false")
    except ValueError:
        block = False
    incident = demisto.incident() or {}
    label = f"incident {incident.get('id') or '?'}"
    try:
        case_id, alert_id, job = request_archive(incident, args)
    except Exception as e:
        msg = (f"**Case Archiver: archiving {label} on close FAILED.**\n\n{e}\n\n"
               + ("The close was blocked (block_close_on_failure=true). Fix the Case Archiver instance or "
                  "set block_close_on_failure=false, then close again."
                  if block else
                  "The close went ahead (block_close_on_failure=false). Archive it later with "
                  f"`!{COMMAND} incident_id={incident.get('parentXDRIncident') or incident.get('id') or '<id>'} "
                  "reason=manual`."))
        demisto.error(f"ArchiveCaseOnClose: {label}: {e}")
        if block:
            return_error(msg)
            return
        return_results(CommandResults(readable_output=msg, mark_as_note=True))
        return
    what = f"case {case_id}" + (f" (alert {alert_id})" if alert_id else "")
    state = job.get("state") or "accepted"
    details = f"job `{job.get('job_id')}`, state **{state}**" if job.get("job_id") else f"state **{state}**"
    version = (job.get("result") or {}).get("version")
    if version:
        details += f", archive version `{version}`"
    extra = f"\n\nClose reason: {close_reason}" if close_reason else ""
    if close_notes:
        extra += f"\n\nClose notes: {close_notes[:500]}"
    return_results(CommandResults(readable_output=f"Case Archiver: archive of {what} requested on close: {details}.{extra}"))


if __name__ in ("__main__", "__builtin__", "builtins"):
    main()
