"""Runs crosslang.py as a subprocess (as the Go side will) against the signature-checking fake server."""
import json
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from fake_archiver import FakeArchiver, Fault  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CROSSLANG = os.path.join(HERE, "crosslang.py")


class CrossLangTest(unittest.TestCase):
    def setUp(self):
        self.fake = FakeArchiver(secret=SECRET).start()
        self.addCleanup(self.fake.stop)

    def run_crosslang(self, *args, secret=SECRET, timeout="20"):
        env = dict(os.environ, ARCHIVER_URL=self.fake.url, ARCHIVER_WEBHOOK_SECRET=secret, ARCHIVER_TIMEOUT=timeout,
                   PYTHONDONTWRITEBYTECODE="1")
        env.pop("ARCHIVER_BEARER_TOKEN", None)
        return subprocess.run([sys.executable, CROSSLANG, *args], env=env, capture_output=True, text=True,
                              timeout=60)

    def test_wait(self):
        p = self.run_crosslang("INCIDENT-17", "--verify")
        self.assertEqual(p.returncode, 0, p.stderr)
        job = json.loads(p.stdout)
        self.assertEqual(job["state"], "succeeded")
        self.assertEqual(job["incident_id"], "17")
        paths = [r.path.split("?")[0] for r in self.fake.requests]
        self.assertEqual(paths, ["/v1/whoami", "/v1/incidents/17/archive", f"/v1/jobs/{job['job_id']}",
                                 "/v1/incidents/17/archives", "/v1/incidents/17/archives/latest/verify"])
        self.assertIn("?wait=true", self.fake.requests[1].path)

    def test_no_wait_polls(self):
        p = self.run_crosslang("5", "--no-wait")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["state"], "succeeded")
        self.assertEqual(self.fake.requests[1].path, "/v1/incidents/5/archive")

    def test_survives_a_transient_error(self):
        self.fake.faults.append(Fault(method="POST", status=503, retry_after="0"))
        p = self.run_crosslang("5")
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_wrong_secret_fails(self):
        p = self.run_crosslang("5", secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY")
        self.assertEqual(p.returncode, 1)
        self.assertIn("401", p.stderr)
        self.assertEqual(p.stdout, "")

    def test_verify_failure_fails(self):
        self.fake.verify_result = {"status": "failed", "checked": 3, "ok": 2, "missing": ["a.json"],
                                   "mismatched": [], "unexpected": []}
        p = self.run_crosslang("5", "--verify")
        self.assertEqual(p.returncode, 1)
        self.assertIn("a.json", p.stderr)

    def test_unreachable_server_fails_in_time(self):
        self.fake.stop()
        p = self.run_crosslang("5", timeout="2")
        self.assertEqual(p.returncode, 1)
        self.assertIn("connection error", p.stderr)

    def test_bad_usage(self):
        p = self.run_crosslang("not-an-id")
        self.assertEqual(p.returncode, 1)
        self.assertIn("Invalid incident id", p.stderr)


if __name__ == "__main__":
    unittest.main()
