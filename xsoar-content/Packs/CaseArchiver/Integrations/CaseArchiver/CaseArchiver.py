"""Case Archiver: archive closed Cortex XSIAM / XSOAR 8 cases to Google Cloud Storage.

The integration is a thin, signed HTTP client of the Case Archiver service. It holds the webhook
secret (a type-9 credential), so the post-processing script ArchiveCaseOnClose never sees it.

Every request is authenticated with Standard Webhooks headers (webhook-id, webhook-timestamp,
webhook-signature: v1,<base64 HMAC-SHA256 over "id.timestamp.body">) or, when only a bearer token is
configured, with "Authorization: Bearer <token>". Requests are retried on 429, 5xx and connection
errors with bounded exponential backoff that honours Retry-After, and never past the configured
timeout in total.

The HTTP layer uses only the Python standard library (urllib), so the same client runs in XSOAR and,
outside XSOAR, in the unit tests and in the cross-language test against the real Go server.
"""
import demistomock as demisto  # noqa: F401
from CommonServerPython import *  # noqa: F401,F403

import base64
import binascii
import email.utils
import hashlib
import hmac
import http.client
import json
import random
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Callable

USER_AGENT = "CaseArchiver-XSOAR/1.0"
DEFAULT_TIMEOUT = 30.0  # seconds, total for one command including retries
MAX_ATTEMPTS = 5
BACKOFF_BASE = 0.5  # first backoff, doubled each attempt
BACKOFF_MAX = 8.0
JOB_STATES = ("queued", "running", "succeeded", "failed")

_INCIDENT_ID_RE = re.compile(r"^(?:INCIDENT-)?([1-9][0-9]{0,19})$", re.IGNORECASE)  # as the server's ParseIncidentID
SERVER_DEFAULT_WAIT = 60  # seconds the server holds ?wait=true when no ?timeout= is given


class ApiError(DemistoException):
    """A non-2xx answer from the service, with its RFC 9457 problem document when there is one."""

    def __init__(self, message: str, status: int = 0, problem: dict | None = None):
        super().__init__(message)
        self.status = status
        self.problem = problem or {}


# ---------------------------------------------------------------------------------------------
# Signing (Standard Webhooks) and small helpers


def parse_webhook_secret(secret: str) -> bytes:
    """Returns the HMAC key of a "whsec_<base64>" secret (the prefix is optional here)."""
    s = (secret or "").strip()
    if s.startswith("whsec_"):
        s = s[len("whsec_"):]
    if not s:
        raise DemistoException("The webhook secret is empty.")
    try:
        key = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise DemistoException("The webhook secret must be whsec_ followed by base64 (as printed by the server).")
    if len(key) < 16:
        raise DemistoException("The webhook secret is too short: the server requires at least 16 bytes of key.")
    return key


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """Returns the webhook-signature header value for body sent with msg_id and timestamp."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode()


def new_webhook_id() -> str:
    return "msg_" + uuid.uuid4().hex


def normalize_incident_id(value: Any) -> str:
    """Accepts 123, "123", "INCIDENT-123" (XSIAM parentXDRIncident) and returns "123"."""
    s = str(value if value is not None else "").strip()
    m = _INCIDENT_ID_RE.match(s)
    if not m:
        raise DemistoException(f'Invalid incident id "{s}": expected a number (1 to 20 digits, no leading zero) '
                               'or INCIDENT-<number>.')
    return m.group(1)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_replay(problem: dict) -> bool:
    text = " ".join(str(problem.get(k, "")) for k in ("type", "title", "detail")).lower()
    return "replay" in text or "already used" in text


def _retryable_status(status: int) -> bool:
    return status == 429 or (500 <= status <= 599 and status not in (501, 505))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would re-send a POST as a GET without its body (breaking
    the signature) and could carry the auth headers to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# ---------------------------------------------------------------------------------------------
# Client


class Client:
    """Signed client of the Case Archiver HTTP API (stdlib only)."""

    def __init__(self, base_url: str, webhook_secret: str | None = None, bearer_token: str | None = None,
                 verify: bool = True, proxy: bool = False, timeout: float = DEFAULT_TIMEOUT,
                 max_attempts: int = MAX_ATTEMPTS, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, log: Callable[[str], None] | None = None):
        url = (base_url or "").strip().rstrip("/")
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise DemistoException(f'Invalid server URL "{base_url}": expected https://host[:port].')
        self.base_url = url
        self._key = parse_webhook_secret(webhook_secret) if webhook_secret else None
        self._token = (bearer_token or "").strip() or None
        if self._key is None and self._token is None:
            raise DemistoException("Configure the webhook secret (whsec_...) or a bearer token.")
        if timeout is None or timeout <= 0:
            raise DemistoException("The timeout must be a positive number of seconds.")
        self.timeout = float(timeout)
        self.max_attempts = max(1, int(max_attempts))
        self._sleep = sleep
        self._clock = clock
        self._log = log or (lambda msg: demisto.debug(msg))
        handlers: list[Any] = [_NoRedirect()]
        if parsed.scheme == "https":
            ctx = ssl.create_default_context()
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        # proxy=True: urllib's default ProxyHandler reads http(s)_proxy from the environment, which
        # is where XSOAR puts the system proxy. proxy=False: never use a proxy.
        handlers.append(urllib.request.ProxyHandler() if proxy else urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)
        self.last_headers: dict[str, str] = {}  # headers of the last successful response

    # -- transport ---------------------------------------------------------------------------

    def _headers(self, msg_id: str, body: bytes) -> dict[str, str]:
        h = {"Accept": "application/json, application/problem+json", "User-Agent": USER_AGENT}
        if body:
            h["Content-Type"] = "application/json"
        if self._key is not None:
            ts = str(int(time.time()))
            h["webhook-id"] = msg_id
            h["webhook-timestamp"] = ts
            h["webhook-signature"] = sign(self._key, msg_id, ts, body)
        else:
            h["Authorization"] = f"Bearer {self._token}"
        return h

    def _send(self, method: str, url: str, body: bytes, headers: dict[str, str], timeout: float):
        """One attempt. Returns (status, headers, body bytes); HTTP error statuses are returned too."""
        req = urllib.request.Request(url, data=body if method != "GET" else None, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            try:
                data = e.read()
            except Exception:  # the body of an error response is best effort
                data = b""
            finally:
                e.close()
            return e.code, e.headers, data

    def request(self, method: str, path: str, body: dict | None = None, query: dict | None = None,
                stable_id: bool = False, timeout: float | None = None) -> tuple[int, dict, Any]:
        """Sends a request with retries and returns (status, headers, decoded JSON).

        stable_id: keep one webhook-id for the request and all its retries (the archive trigger);
        otherwise every attempt gets a fresh id (reads and verify are idempotent, and the server
        rejects a webhook-id it has already seen, so a retry after a lost response would fail).
        timeout: total budget in seconds, capped by the instance timeout.
        """
        budget = self.timeout if not timeout or timeout <= 0 else min(float(timeout), self.timeout)
        deadline = self._clock() + budget
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        msg_id = new_webhook_id()
        redelivered = False
        last_error = ""
        attempt = 0
        prev_got_response = False
        while True:
            attempt += 1
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise DemistoException(f"{method} {path}: gave up after {attempt - 1} attempt(s) within the "
                                       f"{budget:g}s timeout. Last error: {last_error or 'none'}")
            if not stable_id and attempt > 1:
                msg_id = new_webhook_id()
            retry_after = None
            try:
                status, headers, raw = self._send(method, url, data, self._headers(msg_id, data), remaining)
            except ssl.SSLCertVerificationError as e:
                raise DemistoException(f"TLS certificate of {self.base_url} is not trusted ({e}). Fix the "
                                       "certificate or, for testing only, check 'Trust any certificate'.")
            except urllib.error.URLError as e:
                if isinstance(e.reason, ssl.SSLCertVerificationError):
                    raise DemistoException(f"TLS certificate of {self.base_url} is not trusted ({e.reason}). Fix "
                                           "the certificate or, for testing only, check 'Trust any certificate'.")
                last_error = f"connection error: {e.reason}"
                prev_got_response = False
            except (TimeoutError, socket.timeout, ConnectionError, http.client.HTTPException, OSError) as e:
                last_error = f"connection error: {type(e).__name__}: {e}"
                prev_got_response = False
            else:
                payload = _decode(raw)
                if 200 <= status < 300:
                    if redelivered and isinstance(payload, dict):
                        self._log(f"{method} {path}: re-sent with a new webhook-id after a replay rejection")
                    self.last_headers = dict(headers.items()) if headers else {}
                    return status, self.last_headers, payload
                problem = payload if isinstance(payload, dict) else {}
                if (status == 401 and stable_id and attempt > 1 and not redelivered and is_replay(problem)):
                    # An earlier attempt with this webhook-id reached the server and passed the
                    # signature check, but we do not know whether it was accepted: either its
                    # response was lost, or the server answered 429/5xx after authenticating.
                    # Re-triggering is safe (the server skips an incident whose archive is current
                    # unless force is set), so send it once more as a new logical request.
                    self._log(f"{method} {path}: webhook-id {msg_id} was already used by an earlier attempt "
                              f"({'after an error response' if prev_got_response else 'response lost'}); "
                              "re-sending with a new webhook-id")
                    msg_id = new_webhook_id()
                    redelivered = True
                    continue
                if not _retryable_status(status):
                    raise _api_error(method, path, status, problem, raw)
                last_error = _describe(status, problem, raw)
                retry_after = parse_retry_after(headers.get("Retry-After") if headers else None)
                prev_got_response = True
            if attempt >= self.max_attempts:
                raise DemistoException(f"{method} {path}: failed after {attempt} attempt(s): {last_error}")
            delay = min(BACKOFF_MAX, BACKOFF_BASE * (2 ** (attempt - 1)))
            delay = delay * (0.5 + random.random() / 2)  # jitter
            if retry_after is not None:
                delay = max(delay, retry_after)
            remaining = deadline - self._clock()
            if delay >= remaining:
                raise DemistoException(f"{method} {path}: not retrying, the next attempt (in {delay:.1f}s) would "
                                       f"pass the {budget:g}s timeout. Last error: {last_error}")
            self._log(f"{method} {path}: attempt {attempt} failed ({last_error}); retrying in {delay:.2f}s")
            self._sleep(delay)

    # -- API -----------------------------------------------------------------------------------

    def whoami(self) -> dict:
        return self.request("GET", "/v1/whoami")[2]

    def archive(self, incident_id: str, reason: str = "manual", alert_id: str = "", closed_at: str = "",
                requested_by: str = "", force: bool = False, wait: bool = False,
                timeout: float | None = None) -> tuple[int, dict]:
        """Triggers an archive; returns (HTTP status, Job). 202 queued, 201 finished (wait=true)."""
        body: dict[str, Any] = {"reason": reason or "manual"}
        if alert_id:
            body["alert_id"] = str(alert_id)
        if closed_at:
            body["closed_at"] = closed_at
        if requested_by:
            body["requested_by"] = requested_by
        if force:
            body["force"] = True
        path = f"/v1/incidents/{_seg(normalize_incident_id(incident_id))}/archive"
        query = None
        if wait:
            query = {"wait": "true"}
            # The server holds a waiting request for 60s unless told otherwise; ask for less when our
            # own budget is shorter, leaving a margin to read the answer (202 if still running).
            budget = self.timeout if not timeout or timeout <= 0 else min(float(timeout), self.timeout)
            server_wait = max(1, int(budget - min(5.0, budget * 0.2)))
            if server_wait < SERVER_DEFAULT_WAIT:
                query["timeout"] = f"{server_wait}s"
        status, _, job = self.request("POST", path, body=body, query=query, stable_id=True, timeout=timeout)
        return status, _expect_dict(job, path)

    def get_job(self, job_id: str) -> dict:
        if not job_id:
            raise DemistoException("job_id is required.")
        path = f"/v1/jobs/{_seg(job_id)}"
        return _expect_dict(self.request("GET", path)[2], path)

    def list_archives(self, incident_id: str, include_incomplete: bool = False) -> dict:
        path = f"/v1/incidents/{_seg(normalize_incident_id(incident_id))}/archives"
        q = {"include_incomplete": "true"} if include_incomplete else None
        return _expect_dict(self.request("GET", path, query=q)[2], path)

    def verify(self, incident_id: str, version: str = "latest") -> dict:
        path = (f"/v1/incidents/{_seg(normalize_incident_id(incident_id))}/archives/"
                f"{_seg(version or 'latest')}/verify")
        return _expect_dict(self.request("POST", path, body={})[2], path)


def _seg(s: Any) -> str:
    return urllib.parse.quote(str(s), safe="")


def _decode(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _expect_dict(v: Any, path: str) -> dict:
    if not isinstance(v, dict):
        raise DemistoException(f"{path}: the server did not answer with a JSON object: {str(v)[:200]}")
    return v


def _describe(status: int, problem: dict, raw: bytes) -> str:
    if problem:
        msg = f"HTTP {status} {problem.get('title') or ''}".strip()
        if problem.get("detail"):
            msg += f": {problem['detail']}"
        errs = problem.get("errors")
        if isinstance(errs, dict) and errs:
            msg += " (" + "; ".join(f"{k}: {v}" for k, v in sorted(errs.items())) + ")"
        return msg
    text = raw.decode("utf-8", "replace").strip()[:200] if raw else ""
    return f"HTTP {status}" + (f": {text}" if text else "")


def _api_error(method: str, path: str, status: int, problem: dict, raw: bytes) -> ApiError:
    msg = f"{method} {path}: {_describe(status, problem, raw)}"
    if status == 401:
        msg += (" - check the webhook secret (or bearer token) in the instance settings, and that the "
                "XSOAR clock is within 5 minutes of real time.")
    elif status == 403:
        msg += " - the credential lacks the role this command needs."
    elif 300 <= status < 400:
        msg += " - the server redirected the request; use the final https URL as the server URL."
    return ApiError(msg, status, problem)


# ---------------------------------------------------------------------------------------------
# Commands

JOB_HEADERS = ["job_id", "incident_id", "state", "attempts", "created_at", "finished_at", "version",
               "objects", "bytes", "skipped", "error"]
ARCHIVE_HEADERS = ["version", "complete", "started_at", "finished_at", "objects", "bytes", "manifest_path"]


def _job_row(job: dict) -> dict:
    result = job.get("result") or {}
    progress = job.get("progress") or {}
    return {
        "job_id": job.get("job_id"),
        "incident_id": job.get("incident_id"),
        "state": job.get("state"),
        "attempts": job.get("attempts"),
        "created_at": job.get("created_at"),
        "finished_at": job.get("finished_at"),
        "version": result.get("version"),
        "objects": result.get("objects", progress.get("objects")),
        "bytes": result.get("bytes", progress.get("bytes")),
        "skipped": result.get("skipped"),
        "error": job.get("error"),
    }


def _job_results(job: dict, title: str) -> CommandResults:
    md = tableToMarkdown(title, _job_row(job), headers=JOB_HEADERS, removeNull=True)
    incomplete = (job.get("result") or {}).get("incomplete") or []
    if incomplete:
        md += tableToMarkdown("Incomplete parts", incomplete, headers=["kind", "path", "detail"], removeNull=True)
    return CommandResults(outputs_prefix="CaseArchiver.Job", outputs_key_field="job_id", outputs=job,
                          readable_output=md, raw_response=job)


def test_module(client: Client) -> str:
    """Proves URL and credential: whoami must answer and grant the trigger role (admin implies all).

    A webhook signature grants trigger and read. A bearer token grants the one role it was issued
    with: a trigger-only token is enough for the close hook, but get-job / list / verify need read.
    """
    who = client.whoami()
    roles = set(who.get("roles") or [])
    if "admin" not in roles and "trigger" not in roles:
        return (f"Authenticated as {who.get('subject')!r} with roles {sorted(roles)}, but the credential lacks "
                "the role(s) trigger needed to request archives. Use the webhook secret, or a trigger token.")
    return "ok"


def archive_incident_command(client: Client, args: dict) -> CommandResults:
    incident_id = args.get("incident_id")
    if not incident_id:
        raise DemistoException("incident_id is required.")
    status, job = client.archive(
        incident_id=incident_id,
        reason=args.get("reason") or "manual",
        alert_id=args.get("alert_id") or "",
        closed_at=args.get("closed_at") or "",
        requested_by=args.get("requested_by") or "",
        force=argToBoolean(args.get("force") or "false"),
        wait=argToBoolean(args.get("wait") or "false"),
        timeout=arg_to_number(args.get("timeout"), "timeout"),
    )
    title = f"Case Archiver job for incident {job.get('incident_id', incident_id)} ({job.get('state', 'unknown')})"
    return _job_results(job, title)


def get_job_command(client: Client, args: dict) -> CommandResults:
    job = client.get_job(args.get("job_id") or "")
    return _job_results(job, f"Case Archiver job {job.get('job_id')}")


def list_archives_command(client: Client, args: dict) -> CommandResults:
    incident_id = args.get("incident_id")
    if not incident_id:
        raise DemistoException("incident_id is required.")
    res = client.list_archives(incident_id, argToBoolean(args.get("include_incomplete") or "false"))
    inc = str(res.get("incident_id") or normalize_incident_id(incident_id))
    versions = [dict(v, incident_id=inc) for v in (res.get("versions") or []) if isinstance(v, dict)]
    md = tableToMarkdown(f"Archives of incident {inc}", versions, headers=ARCHIVE_HEADERS, removeNull=True)
    return CommandResults(outputs_prefix="CaseArchiver.Archive", outputs_key_field=["incident_id", "version"],
                          outputs=versions, readable_output=md, raw_response=res)


def verify_archive_command(client: Client, args: dict) -> CommandResults:
    incident_id = args.get("incident_id")
    if not incident_id:
        raise DemistoException("incident_id is required.")
    res = client.verify(incident_id, args.get("version") or "latest")
    row = {
        "incident_id": res.get("incident_id"),
        "version": res.get("version"),
        "status": res.get("status"),
        "checked": res.get("checked"),
        "ok": res.get("ok"),
        "missing": len(res.get("missing") or []),
        "mismatched": len(res.get("mismatched") or []),
        "unexpected": len(res.get("unexpected") or []),
    }
    md = tableToMarkdown(f"Verification of incident {row['incident_id']} archive {row['version']}", row,
                         headers=list(row))
    problems = [{"problem": kind, "path": p} for kind in ("missing", "mismatched", "unexpected")
                for p in (res.get(kind) or [])]
    if problems:
        md += tableToMarkdown("Objects that failed verification", problems[:50], headers=["problem", "path"])
        if len(problems) > 50:
            md += f"\n{len(problems) - 50} more; see CaseArchiver.Verification in the context.\n"
    return CommandResults(outputs_prefix="CaseArchiver.Verification", outputs_key_field=["incident_id", "version"],
                          outputs=res, readable_output=md, raw_response=res)


COMMANDS: dict[str, Callable[[Client, dict], CommandResults]] = {
    "case-archiver-archive-incident": archive_incident_command,
    "case-archiver-get-job": get_job_command,
    "case-archiver-list-archives": list_archives_command,
    "case-archiver-verify-archive": verify_archive_command,
}


def client_from_params(params: dict) -> Client:
    creds = params.get("credentials") or {}
    token = params.get("bearer_token") or {}
    timeout = params.get("timeout")
    try:
        timeout_s = float(timeout) if timeout not in (None, "") else DEFAULT_TIMEOUT
    except ValueError:
        raise DemistoException(f'Invalid timeout "{timeout}": expected seconds.')
    return Client(
        base_url=params.get("url") or "",
        webhook_secret=(creds.get("password") if isinstance(creds, dict) else creds) or None,
        bearer_token=(token.get("password") if isinstance(token, dict) else token) or None,
        verify=not argToBoolean(params.get("insecure") or False),
        proxy=argToBoolean(params.get("proxy") or False),
        timeout=timeout_s,
    )


def main() -> None:
    command = demisto.command()
    demisto.debug(f"Command being called is {command}")
    try:
        client = client_from_params(demisto.params())
        if command == "test-module":
            return_results(test_module(client))
        elif command in COMMANDS:
            return_results(COMMANDS[command](client, demisto.args()))
        else:
            raise NotImplementedError(f"Command {command} is not implemented.")
    except Exception as e:
        return_error(f"Failed to execute {command} command.\nError:\n{e}", error=e)


if __name__ in ("__main__", "__builtin__", "builtins"):
    main()
