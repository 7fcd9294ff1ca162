"""Tests of the Case Archiver integration (standard library unittest; also run under pytest).

Outside the content repo the stand-ins for demistomock / CommonServerPython and the fake server come
from xsoar-content/test_support. Run all pack tests with xsoar-content/run_tests.sh.
"""
import json
import os
import sys
import time
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
SUPPORT = os.path.normpath(os.path.join(HERE, "..", "..", "..", "..", "test_support"))
for p in (HERE, SUPPORT):
    if p not in sys.path:
        sys.path.insert(0, p)

import demistomock as demisto  # noqa: E402
import CaseArchiver as ca  # noqa: E402
from CommonServerPython import EntryType  # noqa: E402
from fake_archiver import FakeArchiver, Fault  # noqa: E402

# The signing vector shared with the Go tests (handlers/testdata/webhook_vector.json in this repo).
VECTOR_PATH = os.path.normpath(os.path.join(HERE, "..", "..", "..", "..", "..", "handlers", "testdata",
                                            "webhook_vector.json"))
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"


class FakeClock:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, d):
        self.sleeps.append(d)
        self.now += d


def make_client(url, clock=None, **kw):
    kw.setdefault("webhook_secret", SECRET)
    if clock is not None:
        kw.setdefault("sleep", clock.sleep)
        kw.setdefault("clock", clock.clock)
    return ca.Client(url, **kw)


class SigningTest(unittest.TestCase):
    def test_shared_vector(self):
        with open(VECTOR_PATH, encoding="utf-8") as f:
            v = json.load(f)
        key = ca.parse_webhook_secret(v["secret"])
        self.assertEqual(ca.sign(key, v["id"], v["timestamp"], v["body"].encode()), v["signature"])

    def test_secret_without_prefix_is_the_same_key(self):
        self.assertEqual(ca.parse_webhook_secret(SECRET), ca.parse_webhook_secret(SECRET[len("whsec_"):]))

    def test_bad_secrets(self):
        for bad in ("", "whsec_", "whsec_not base64!", "whsec_c2hvcnQ="):
            with self.subTest(bad=bad), self.assertRaises(ca.DemistoException):
                ca.parse_webhook_secret(bad)

    def test_body_changes_signature(self):
        key = ca.parse_webhook_secret(SECRET)
        a = ca.sign(key, "msg_1", "1", b'{"a":1}')
        self.assertNotEqual(a, ca.sign(key, "msg_1", "1", b'{"a":2}'))
        self.assertNotEqual(a, ca.sign(key, "msg_2", "1", b'{"a":1}'))
        self.assertNotEqual(a, ca.sign(key, "msg_1", "2", b'{"a":1}'))

    def test_webhook_ids_are_unique(self):
        ids = {ca.new_webhook_id() for _ in range(100)}
        self.assertEqual(len(ids), 100)
        self.assertTrue(all(i.startswith("msg_") for i in ids))


class HelpersTest(unittest.TestCase):
    def test_normalize_incident_id(self):
        for given, want in (("5", "5"), (5, "5"), ("INCIDENT-5", "5"), ("incident-42", "42"), (" 7 ", "7")):
            with self.subTest(given=given):
                self.assertEqual(ca.normalize_incident_id(given), want)
        for bad in ("", None, "abc", "INCIDENT-", "5/../6", "-5", "1.5", "0", "007", "1" * 21):
            with self.subTest(bad=bad), self.assertRaises(ca.DemistoException):
                ca.normalize_incident_id(bad)

    def test_parse_retry_after(self):
        self.assertEqual(ca.parse_retry_after("3"), 3.0)
        self.assertIsNone(ca.parse_retry_after(None))
        self.assertIsNone(ca.parse_retry_after("soon"))
        now = 1_700_000_000
        date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 10))
        self.assertAlmostEqual(ca.parse_retry_after(date, now=now), 10.0, delta=1)
        past = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now - 10))
        self.assertEqual(ca.parse_retry_after(past, now=now), 0.0)

    def test_is_replay(self):
        self.assertTrue(ca.is_replay({"title": "Unauthorized", "detail": "webhook-id was already used"}))
        self.assertTrue(ca.is_replay({"title": "Replay"}))
        self.assertFalse(ca.is_replay({"title": "Unauthorized", "detail": "no webhook signature matches"}))

    def test_client_config_errors(self):
        for kw in ({"base_url": "ftp://x"}, {"base_url": "notaurl"},
                   {"base_url": "https://x", "webhook_secret": None},
                   {"base_url": "https://x", "webhook_secret": SECRET, "timeout": 0}):
            with self.subTest(kw=kw), self.assertRaises(ca.DemistoException):
                ca.Client(**kw)

    def test_client_from_params(self):
        c = ca.client_from_params({"url": "https://archiver.example/", "credentials": {"password": SECRET},
                                   "insecure": True, "proxy": False, "timeout": "12"})
        self.assertEqual(c.base_url, "https://archiver.example")
        self.assertEqual(c.timeout, 12.0)
        c = ca.client_from_params({"url": "https://a.example", "bearer_token": {"password": "tok"}})
        self.assertEqual(c.timeout, ca.DEFAULT_TIMEOUT)
        with self.assertRaises(ca.DemistoException):
            ca.client_from_params({"url": "https://a.example", "credentials": {"identifier": "", "password": ""}})
        with self.assertRaises(ca.DemistoException):
            ca.client_from_params({"url": "https://a.example", "bearer_token": {"password": "t"}, "timeout": "x"})


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.fake = FakeArchiver(secret=SECRET, tokens={"readtok": ["read"], "alltok": ["trigger", "read"]}).start()
        self.addCleanup(self.fake.stop)
        self.clock = FakeClock()

    def client(self, **kw):
        return make_client(self.fake.url, self.clock, **kw)

    def test_whoami_is_signed(self):
        who = self.client().whoami()
        self.assertEqual(who["roles"], ["trigger", "read"])
        (req,) = self.fake.requests
        self.assertEqual(req.method, "GET")
        self.assertTrue(req.headers["webhook-id"].startswith("msg_"))
        key = ca.parse_webhook_secret(SECRET)
        self.assertEqual(req.headers["webhook-signature"],
                         ca.sign(key, req.headers["webhook-id"], req.headers["webhook-timestamp"], b""))
        self.assertLessEqual(abs(int(req.headers["webhook-timestamp"]) - time.time()), 5)
        self.assertNotIn("authorization", req.headers)

    def test_wrong_secret_is_401_with_hint(self):
        with self.assertRaises(ca.ApiError) as cm:
            self.client(webhook_secret=OTHER_SECRET).whoami()
        self.assertEqual(cm.exception.status, 401)
        self.assertIn("no webhook signature matches", str(cm.exception))
        self.assertIn("check the webhook secret", str(cm.exception))
        self.assertEqual(len(self.fake.requests), 1, "401 must not be retried")

    def test_bearer_token(self):
        who = self.client(webhook_secret=None, bearer_token="alltok").whoami()
        self.assertEqual(who["roles"], ["trigger", "read"])
        self.assertEqual(self.fake.requests[0].headers["authorization"], "Bearer alltok")
        self.assertNotIn("webhook-signature", self.fake.requests[0].headers)

    def test_archive_body_and_path(self):
        status, job = self.client().archive("INCIDENT-5", reason="incident_closed", alert_id="77",
                                            closed_at="2026-01-02T03:04:05Z", requested_by="analyst@example.com")
        self.assertEqual(status, 202)
        self.assertEqual(job["state"], "queued")
        self.assertEqual(job["incident_id"], "5")
        (req,) = self.fake.requests
        self.assertEqual(req.path, "/v1/incidents/5/archive")
        self.assertEqual(json.loads(req.body), {"reason": "incident_closed", "alert_id": "77",
                                                "closed_at": "2026-01-02T03:04:05Z",
                                                "requested_by": "analyst@example.com"})
        self.assertEqual(req.headers["content-type"], "application/json")

    def test_archive_wait(self):
        status, job = self.client().archive("12", wait=True, force=True)
        self.assertEqual(status, 201)
        self.assertEqual(job["state"], "succeeded")
        self.assertEqual(self.fake.requests[0].path, "/v1/incidents/12/archive?wait=true&timeout=25s")
        self.assertEqual(json.loads(self.fake.requests[0].body), {"reason": "manual", "force": True})

    def test_archive_wait_timeout_follows_budget(self):
        c = self.client(timeout=120)
        c.archive("12", wait=True)
        self.assertEqual(self.fake.requests[-1].path, "/v1/incidents/12/archive?wait=true", "server default 60s fits")
        c.archive("12", wait=True, timeout=10)
        self.assertEqual(self.fake.requests[-1].path, "/v1/incidents/12/archive?wait=true&timeout=8s")
        c.archive("12", wait=True, timeout=1)
        self.assertEqual(self.fake.requests[-1].path, "/v1/incidents/12/archive?wait=true&timeout=1s")

    def test_get_job_list_and_verify(self):
        c = self.client()
        _, job = c.archive("9")
        got = c.get_job(job["job_id"])
        self.assertEqual(got["job_id"], job["job_id"])
        self.assertEqual(got["state"], "succeeded")
        arch = c.list_archives("9")
        self.assertEqual(arch["incident_id"], "9")
        self.assertEqual(len(arch["versions"]), 1)
        ver = c.verify("INCIDENT-9")
        self.assertEqual(ver["status"], "ok")
        self.assertEqual(self.fake.requests[-1].path, "/v1/incidents/9/archives/latest/verify")
        self.assertEqual(self.fake.requests[-1].body, b"{}")
        ids = [r.headers["webhook-id"] for r in self.fake.requests]
        self.assertEqual(len(set(ids)), len(ids))

    def test_validation_error_is_not_retried_and_readable(self):
        with self.assertRaises(ca.ApiError) as cm:
            self.client().archive("1", closed_at="yesterday")
        self.assertEqual(cm.exception.status, 422)
        self.assertIn("closed_at: must be RFC 3339", str(cm.exception))
        self.assertEqual(len(self.fake.requests), 1)

    def test_not_found(self):
        with self.assertRaises(ca.ApiError) as cm:
            self.client().get_job("nope")
        self.assertEqual(cm.exception.status, 404)
        self.assertEqual(len(self.fake.requests), 1)

    def test_retry_5xx_keeps_webhook_id_for_archive(self):
        self.fake.faults += [Fault(status=503), Fault(status=502)]
        status, job = self.client().archive("3")
        self.assertEqual(status, 202)
        self.assertEqual([r.status for r in self.fake.requests], [503, 502, 202])
        ids = {r.headers["webhook-id"] for r in self.fake.requests}
        self.assertEqual(len(ids), 1, "one webhook-id for a request and its retries")
        self.assertEqual(len(self.clock.sleeps), 2)
        self.assertLess(self.clock.sleeps[0], self.clock.sleeps[1] + 1e-9 + ca.BACKOFF_BASE)

    def test_retry_gets_fresh_ids_for_reads(self):
        self.fake.faults += [Fault(status=500, after_auth=True)]
        self.client().whoami()
        self.assertEqual([r.status for r in self.fake.requests], [500, 200])
        self.assertNotEqual(self.fake.requests[0].headers["webhook-id"], self.fake.requests[1].headers["webhook-id"])

    def test_retry_after_is_honoured(self):
        self.fake.faults.append(Fault(status=429, retry_after="4"))
        self.client().whoami()
        self.assertEqual(self.clock.sleeps, [4.0])

    def test_retry_after_past_the_timeout_gives_up(self):
        self.fake.faults.append(Fault(status=429, retry_after="60"))
        with self.assertRaises(ca.DemistoException) as cm:
            self.client(timeout=10).whoami()
        self.assertIn("would pass the 10s timeout", str(cm.exception))
        self.assertEqual(len(self.fake.requests), 1)
        self.assertEqual(self.clock.sleeps, [])

    def test_connection_drop_is_retried(self):
        self.fake.faults.append(Fault(drop=True))
        self.assertEqual(self.client().whoami()["roles"], ["trigger", "read"])
        self.assertEqual(len(self.fake.requests), 2)

    def test_lost_archive_response_then_replay_resends_with_new_id(self):
        # The first attempt is processed but its answer is lost; the retry (same id) is a replay.
        self.fake.faults.append(Fault(method="POST", process=True, drop=True))
        status, job = self.client().archive("8", reason="incident_closed")
        self.assertEqual(status, 202)
        self.assertEqual([r.status for r in self.fake.requests], [-1, 401, 202])
        ids = [r.headers["webhook-id"] for r in self.fake.requests]
        self.assertEqual(ids[0], ids[1])
        self.assertNotEqual(ids[1], ids[2])
        self.assertEqual(len(self.fake.jobs), 2, "the server skips the duplicate; the client always gets a job")

    def test_error_after_auth_then_replay_resends(self):
        self.fake.faults.append(Fault(method="POST", status=503, after_auth=True))
        status, _ = self.client().archive("8")
        self.assertEqual([r.status for r in self.fake.requests], [503, 401, 202])
        self.assertEqual(len(self.fake.jobs), 1)

    def test_replay_on_first_attempt_is_an_error(self):
        c = self.client()
        with mock.patch.object(ca, "new_webhook_id", return_value="msg_fixed"):
            c.archive("1")
            with self.assertRaises(ca.ApiError) as cm:
                c.archive("1")
        self.assertEqual(cm.exception.status, 401)

    def test_gives_up_after_max_attempts(self):
        self.fake.faults += [Fault(status=503) for _ in range(10)]
        with self.assertRaises(ca.DemistoException) as cm:
            self.client(max_attempts=3).whoami()
        self.assertIn("failed after 3 attempt(s)", str(cm.exception))
        self.assertIn("HTTP 503", str(cm.exception))
        self.assertEqual(len(self.fake.requests), 3)

    def test_total_timeout_with_slow_server(self):
        self.fake.faults.append(Fault(delay=3.0, status=200))
        c = make_client(self.fake.url, timeout=0.5)  # real clock
        t0 = time.monotonic()
        with self.assertRaises(ca.DemistoException):
            c.whoami()
        self.assertLess(time.monotonic() - t0, 2.0)

    def test_redirect_is_not_followed(self):
        self.fake.faults.append(Fault(status=302))
        with self.assertRaises(ca.ApiError) as cm:
            self.client().whoami()
        self.assertEqual(cm.exception.status, 302)
        self.assertIn("redirected", str(cm.exception))

    def test_proxy_setting(self):
        env = {"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
        with mock.patch.dict(os.environ, env):
            self.assertEqual(self.client(proxy=False).whoami()["roles"], ["trigger", "read"])
            with self.assertRaises(ca.DemistoException) as cm:
                self.client(proxy=True, max_attempts=1).whoami()
        self.assertIn("connection error", str(cm.exception))


class CommandsTest(unittest.TestCase):
    """Each command through main(), as XSOAR runs it."""

    def setUp(self):
        self.fake = FakeArchiver(secret=SECRET, tokens={"readtok": ["read"], "admintok": ["admin"],
                                                        "trigtok": ["trigger"]}).start()
        self.addCleanup(self.fake.stop)
        self.params = {"url": self.fake.url, "credentials": {"identifier": "", "password": SECRET},
                       "insecure": False, "proxy": False, "timeout": "10"}

    def run_command(self, command, args=None, params=None):
        results = []
        with mock.patch.object(demisto, "command", return_value=command), \
                mock.patch.object(demisto, "params", return_value=params or self.params), \
                mock.patch.object(demisto, "args", return_value=args or {}), \
                mock.patch.object(demisto, "results", side_effect=results.append):
            try:
                ca.main()
            except SystemExit:
                pass
        self.assertEqual(len(results), 1, results)
        return results[0]

    def test_test_module_ok(self):
        self.assertEqual(self.run_command("test-module"), "ok")

    def test_test_module_bad_secret(self):
        params = dict(self.params, credentials={"password": OTHER_SECRET})
        entry = self.run_command("test-module", params=params)
        self.assertEqual(entry["Type"], EntryType.ERROR)
        self.assertIn("check the webhook secret", entry["Contents"])

    def test_test_module_missing_role(self):
        params = dict(self.params, credentials={}, bearer_token={"password": "readtok"})
        msg = self.run_command("test-module", params=params)
        self.assertIn("lacks the role(s) trigger", msg)

    def test_test_module_single_role_tokens(self):
        for tok in ("admintok", "trigtok"):
            with self.subTest(tok=tok):
                params = dict(self.params, credentials={}, bearer_token={"password": tok})
                self.assertEqual(self.run_command("test-module", params=params), "ok")

    def test_archive_incident(self):
        entry = self.run_command("case-archiver-archive-incident",
                                 {"incident_id": "INCIDENT-5", "reason": "incident_closed", "alert_id": "33",
                                  "wait": "true"})
        self.assertNotEqual(entry["Type"], EntryType.ERROR, entry)
        ctx = entry["EntryContext"]["CaseArchiver.Job(val.job_id && val.job_id == obj.job_id)"]
        self.assertEqual(ctx["state"], "succeeded")
        self.assertEqual(ctx["incident_id"], "5")
        self.assertEqual(entry["Contents"], ctx)
        self.assertIn("| job_id |", entry["HumanReadable"].replace("|job_id|", "| job_id |"))
        self.assertIn(ctx["job_id"], entry["HumanReadable"])
        self.assertEqual(json.loads(self.fake.requests[0].body), {"reason": "incident_closed", "alert_id": "33"})

    def test_archive_incident_requires_id(self):
        entry = self.run_command("case-archiver-archive-incident", {})
        self.assertEqual(entry["Type"], EntryType.ERROR)
        self.assertIn("incident_id is required", entry["Contents"])

    def test_get_job(self):
        _, job = make_client(self.fake.url).archive("4")
        entry = self.run_command("case-archiver-get-job", {"job_id": job["job_id"]})
        ctx = entry["EntryContext"]["CaseArchiver.Job(val.job_id && val.job_id == obj.job_id)"]
        self.assertEqual(ctx["job_id"], job["job_id"])
        self.assertIn("succeeded", entry["HumanReadable"])

    def test_list_archives(self):
        make_client(self.fake.url).archive("4", wait=True)
        make_client(self.fake.url).archive("4", wait=True)
        entry = self.run_command("case-archiver-list-archives", {"incident_id": "4"})
        key = "CaseArchiver.Archive(val.incident_id && val.incident_id == obj.incident_id && " \
              "val.version && val.version == obj.version)"
        versions = entry["EntryContext"][key]
        self.assertEqual(len(versions), 2)
        self.assertTrue(all(v["incident_id"] == "4" for v in versions))
        self.assertIn("manifest_path", entry["HumanReadable"])

    def test_list_archives_empty(self):
        entry = self.run_command("case-archiver-list-archives", {"incident_id": "404"})
        self.assertIn("No entries", entry["HumanReadable"])

    def test_verify_archive(self):
        make_client(self.fake.url).archive("6", wait=True)
        entry = self.run_command("case-archiver-verify-archive", {"incident_id": "6"})
        key = "CaseArchiver.Verification(val.incident_id && val.incident_id == obj.incident_id && " \
              "val.version && val.version == obj.version)"
        self.assertEqual(entry["EntryContext"][key]["status"], "ok")
        self.assertIn("/v1/incidents/6/archives/latest/verify", self.fake.requests[-1].path)

    def test_verify_archive_failed_lists_paths(self):
        make_client(self.fake.url).archive("6", wait=True)
        self.fake.verify_result = {"status": "failed", "checked": 3, "ok": 1, "missing": ["entries.json"],
                                   "mismatched": ["context.json"], "unexpected": []}
        entry = self.run_command("case-archiver-verify-archive", {"incident_id": "6", "version": "latest"})
        self.assertIn("entries.json", entry["HumanReadable"])
        self.assertIn("mismatched", entry["HumanReadable"])
        self.assertNotEqual(entry["Type"], EntryType.ERROR)

    def test_verify_unknown_version(self):
        entry = self.run_command("case-archiver-verify-archive", {"incident_id": "6", "version": "v9"})
        self.assertEqual(entry["Type"], EntryType.ERROR)
        self.assertIn("404", entry["Contents"])

    def test_unknown_command(self):
        entry = self.run_command("case-archiver-nope")
        self.assertEqual(entry["Type"], EntryType.ERROR)
        self.assertIn("not implemented", entry["Contents"])


if __name__ == "__main__":
    unittest.main()
