"""An in-memory fake of the Case Archiver HTTP API for the Python tests (test support only).

It follows docs/design.md and the Go handlers' auth rules: Standard Webhooks signatures (key =
base64 of the secret after "whsec_", content "id.timestamp.body", timestamp within 5 minutes, a
webhook-id seen before rejected as a replay *after* the signature check) or a bearer token, RFC 9457
problem+json errors, strict request bodies (unknown fields rejected).

Faults can be scripted to test retries: ``server.faults.append(Fault(...))``; each fault is used once,
by the first request it matches.

Run standalone (``python3 fake_archiver.py --secret whsec_...``) it serves until interrupted and
prints its URL, which is handy for trying crosslang.py by hand.
"""
import argparse
import base64
import hashlib
import hmac
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARCHIVE_FIELDS = {"reason", "alert_id", "closed_at", "requested_by", "force"}
_ID_RE = re.compile(r"^(?:INCIDENT-)?([1-9][0-9]{0,19})$", re.IGNORECASE)
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclass
class Fault:
    """One scripted misbehaviour.

    method/path_prefix select the request. status: answer with this status (problem+json) instead of
    serving. after_auth: authenticate first (so the webhook-id is remembered, like a handler error in
    the real server) rather than failing before auth (like a load balancer). drop: close the
    connection without an answer; with process=True the request is served first and only the answer is
    lost. delay: sleep this long first. retry_after: Retry-After header value.
    """
    method: str = ""
    path_prefix: str = ""
    status: int = 0
    after_auth: bool = False
    drop: bool = False
    process: bool = False
    delay: float = 0.0
    retry_after: str | None = None

    def matches(self, method, path):
        return (not self.method or self.method == method) and path.startswith(self.path_prefix)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: bytes
    status: int = 0


@dataclass
class FakeArchiver:
    secret: str | None = None
    tokens: dict = field(default_factory=dict)  # token -> list of roles
    clock_skew: float = 0.0
    finish_on_wait: bool = True

    def __post_init__(self):
        self.key = None
        if self.secret:
            assert self.secret.startswith("whsec_")
            self.key = base64.b64decode(self.secret[len("whsec_"):])
        self.faults: list[Fault] = []
        self.requests: list[Seen] = []
        self.jobs: dict[str, dict] = {}
        self.archives: dict[str, list[dict]] = {}
        self.verify_result: dict | None = None
        self.seen_ids: dict[str, float] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_GET(self):
                fake._handle(self, "GET")

            def do_POST(self):
                fake._handle(self, "POST")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # clients that gave up (timeouts, dropped connections) are part of the tests

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def start(self):
        return self.__enter__()

    def stop(self):
        self.__exit__()

    # -- request handling ------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str):
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        path, _, query = h.path.partition("?")
        seen = Seen(method, h.path, {k.lower(): v for k, v in h.headers.items()}, body)
        with self.lock:
            self.requests.append(seen)
            fault = next((f for f in self.faults if f.matches(method, path)), None)
            if fault:
                self.faults.remove(fault)
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and not fault.after_auth and not fault.process:
            return self._fault(h, fault, seen)
        status, roles, detail = self._auth(h, body)
        if status:
            return self._problem(h, seen, status, detail)
        if fault and not fault.process:
            return self._fault(h, fault, seen)
        status, headers, payload = self._route(method, path, query, body, roles)
        if fault and fault.process and fault.drop:
            seen.status = -1
            return self._drop(h)
        seen.status = status
        self._send(h, status, payload, headers)

    def _fault(self, h, fault, seen):
        if fault.drop:
            seen.status = -1
            return self._drop(h)
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        return self._problem(h, seen, fault.status, "scripted fault", headers)

    @staticmethod
    def _drop(h):
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _auth(self, h, body):
        wid, ts, sigs = h.headers.get("webhook-id"), h.headers.get("webhook-timestamp"), h.headers.get("webhook-signature")
        if wid or sigs:
            if not (wid and ts and sigs) or self.key is None:
                return 401, None, "webhook-id, webhook-timestamp and webhook-signature are all required"
            if not ts.isdigit():
                return 401, None, "webhook-timestamp must be unix seconds"
            now = time.time() + self.clock_skew
            if abs(now - int(ts)) > 300:
                return 401, None, "webhook-timestamp is outside the allowed window"
            mac = hmac.new(self.key, f"{wid}.{ts}.".encode() + body, hashlib.sha256).digest()
            want = base64.b64encode(mac).decode()
            if not any(s.startswith("v1,") and hmac.compare_digest(s[3:], want) for s in sigs.split()):
                return 401, None, "no webhook signature matches"
            with self.lock:
                if wid in self.seen_ids:
                    return 401, None, "webhook-id was already used"
                self.seen_ids[wid] = now
            return 0, ["trigger", "read"], ""
        auth = h.headers.get("Authorization") or ""
        if not auth:
            return 401, None, "authentication required"
        scheme, _, tok = auth.partition(" ")
        if scheme.lower() != "bearer" or tok not in self.tokens:
            return 401, None, "unknown bearer token"
        return 0, list(self.tokens[tok]), ""

    def _route(self, method, path, query, body, roles):
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts == ["v1", "whoami"]:
            return 200, {}, {"subject": "webhook" if "trigger" in roles and len(roles) == 2 else "token", "roles": roles}
        if len(parts) >= 3 and parts[:2] == ["v1", "incidents"]:
            m = _ID_RE.match(parts[2])
            if not m:
                return self._err(422, "invalid request", {"incident_id": "must be a decimal id of 1 to 20 digits, or INCIDENT-<n>"})
            inc = m.group(1)
            rest = parts[3:]
            if method == "POST" and rest == ["archive"]:
                if "trigger" not in roles:
                    return self._err(403, "role trigger required")
                return self._archive(inc, query, body)
            if method == "GET" and rest == ["archives"]:
                return 200, {}, {"incident_id": inc, "versions": list(self.archives.get(inc, []))}
            if method == "POST" and len(rest) == 3 and rest[0] == "archives" and rest[2] == "verify":
                versions = self.archives.get(inc, [])
                if not versions:
                    return self._err(404, f"no archive of incident {inc}")
                v = versions[-1] if rest[1] == "latest" else next((x for x in versions if x["version"] == rest[1]), None)
                if v is None:
                    return self._err(404, f"no archive version {rest[1]}")
                res = self.verify_result or {"status": "ok", "checked": v["objects"], "ok": v["objects"],
                                             "missing": [], "mismatched": [], "unexpected": []}
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                return 200, {}, dict({"incident_id": inc, "version": v["version"], "bytes": v["bytes"],
                                      "verified_at": now}, **res)
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "jobs"]:
            job = self.jobs.get(parts[2])
            if not job:
                return self._err(404, "no such job")
            if job["state"] in ("queued", "running"):
                self._finish(job)  # the fake's worker is instant: the next read sees the job done
            return 200, {}, job
        return self._err(404, "not found")

    def _archive(self, inc, query, body):
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return self._err(400, "body is not JSON")
        if not isinstance(req, dict):
            return self._err(400, "body must be an object")
        unknown = set(req) - ARCHIVE_FIELDS
        if unknown:
            return self._err(422, "invalid request", {k: "unknown field" for k in sorted(unknown)})
        if req.get("closed_at") and not _RFC3339.match(req["closed_at"]):
            return self._err(422, "invalid request", {"closed_at": "must be RFC 3339"})
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        job = {"job_id": uuid.uuid4().hex, "incident_id": inc, "state": "queued", "attempts": 0, "created_at": now,
               "request": {"reason": req.get("reason", ""), "alert_id": req.get("alert_id", ""),
                           "closed_at": req.get("closed_at", ""), "requested_by": req.get("requested_by", ""),
                           "force": bool(req.get("force", False))},
               "progress": {"objects": 0, "bytes": 0}}
        with self.lock:
            self.jobs[job["job_id"]] = job
        q = dict(kv.partition("=")[::2] for kv in query.split("&") if kv)
        if "timeout" in q and not re.match(r"^([1-9][0-9]*s?|[1-4]?[0-9]m|5m)$", q["timeout"]):
            return self._err(422, "invalid request", {"timeout": "must be a duration between 1s and 5m0s"})
        if q.get("wait", "false") not in ("true", "false", "1", "0"):
            return self._err(422, "invalid request", {"wait": "must be true or false"})
        status = 202
        if q.get("wait") in ("true", "1") and self.finish_on_wait:
            self._finish(job)
            status = 201
        return status, {"Location": f"/v1/jobs/{job['job_id']}"}, job

    def _finish(self, job):
        with self.lock:
            if job["state"] in ("succeeded", "failed"):
                return
            inc = job["incident_id"]
            version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
            result = {"version": version, "manifest_path": f"incidents/{inc}/{version}/manifest.json",
                      "skipped": False, "objects": 3, "bytes": 1234, "incomplete": []}
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            job.update(state="succeeded", attempts=1, started_at=now, finished_at=now, result=result,
                       progress={"objects": 3, "bytes": 1234})
            self.archives.setdefault(inc, []).append(
                {"version": version, "complete": True, "started_at": now, "finished_at": now, "objects": 3,
                 "bytes": 1234, "manifest_path": result["manifest_path"], "reason": job["request"]["reason"]})

    @staticmethod
    def _err(status, detail, errors=None):
        p = {"type": "about:blank", "title": {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                                              404: "Not Found", 422: "Unprocessable Entity"}.get(status, "Error"), "status": status,
             "detail": detail}
        if errors:
            p["errors"] = errors
        return status, {"Content-Type": "application/problem+json"}, p

    def _problem(self, h, seen, status, detail, headers=None):
        seen.status = status
        s, hh, p = self._err(status, detail)
        hh.update(headers or {})
        self._send(h, s, p, hh)

    @staticmethod
    def _send(h, status, payload, headers):
        data = json.dumps(payload).encode()
        h.send_response(status)
        headers = dict(headers)
        headers.setdefault("Content-Type", "application/json")
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--secret", required=True)
    args = ap.parse_args()
    with FakeArchiver(secret=args.secret) as fake:
        print(fake.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
