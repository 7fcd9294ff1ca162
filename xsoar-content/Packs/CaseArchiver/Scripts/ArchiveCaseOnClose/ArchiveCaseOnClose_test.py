"""Tests of the ArchiveCaseOnClose post-processing script (standard library unittest; pytest works too)."""
import json
import os
import re
import sys
import time
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
SUPPORT = os.path.normpath(os.path.join(HERE, "..", "..", "..", "..", "test_support"))
INTEGRATION = os.path.normpath(os.path.join(HERE, "..", "..", "Integrations", "CaseArchiver"))
for p in (HERE, SUPPORT):
    if p not in sys.path:
        sys.path.insert(0, p)

import demistomock as demisto  # noqa: E402
import ArchiveCaseOnClose as script  # noqa: E402
from CommonServerPython import EntryType  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
JOB = {"job_id": "j1", "incident_id": "5", "state": "queued", "attempts": 0}
OK_ENTRY = [{"Type": EntryType.NOTE, "ContentsFormat": "json", "Contents": JOB, "HumanReadable": "..."}]
ERR_ENTRY = [{"Type": EntryType.ERROR, "ContentsFormat": "text",
              "Contents": "Failed to execute case-archiver-archive-incident command.\nError:\nHTTP 503"}]
XSOAR = {"version": "8.9.0", "platform": "xsoar"}
XSIAM = {"version": "8.9.0", "platform": "x2"}


class ScriptRun:
    """Runs main() with a given incident, args and executeCommand behaviour; records what it did."""

    def __init__(self, incident, args=None, execute=None, platform=XSOAR):
        self.results, self.calls, self.exited = [], [], False
        execute = execute if execute is not None else (lambda c, a: OK_ENTRY)

        def execute_command(command, cmd_args):
            self.calls.append((command, dict(cmd_args)))
            return execute(command, cmd_args)

        with mock.patch.object(demisto, "incident", return_value=incident), \
                mock.patch.object(demisto, "args", return_value=args if args is not None else {}), \
                mock.patch.object(demisto, "demistoVersion", return_value=platform), \
                mock.patch.object(demisto, "executeCommand", side_effect=execute_command), \
                mock.patch.object(demisto, "results", side_effect=self.results.append):
            try:
                script.main()
            except SystemExit:
                self.exited = True

    @property
    def entry(self):
        assert len(self.results) == 1, self.results
        return self.results[0]

    @property
    def text(self):
        e = self.entry
        return e.get("HumanReadable") or e.get("Contents")


class IdsTest(unittest.TestCase):
    def test_xsoar_incident_id(self):
        run = ScriptRun({"id": "42", "closed": "0001-01-01T00:00:00Z"}, {"closeReason": "Resolved"})
        ((command, args),) = run.calls
        self.assertEqual(command, "case-archiver-archive-incident")
        self.assertEqual(args["incident_id"], "42")
        self.assertEqual(args["reason"], "incident_closed")
        self.assertNotIn("alert_id", args)
        self.assertEqual(args["wait"], "false")
        self.assertEqual(args["timeout"], "30")
        self.assertRegex(args["closed_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertFalse(args["closed_at"].startswith("0001"))
        self.assertNotEqual(run.entry["Type"], EntryType.ERROR)
        self.assertIn("case 42", run.text)
        self.assertIn("j1", run.text)

    def test_xsiam_alert_uses_parent_case(self):
        run = ScriptRun({"id": "77", "parentXDRIncident": "INCIDENT-5", "closingUserId": "analyst@example.com",
                         "closed": "2026-03-04T05:06:07.123Z"}, platform=XSIAM)
        ((_, args),) = run.calls
        self.assertEqual(args["incident_id"], "INCIDENT-5")
        self.assertEqual(args["alert_id"], "77")
        self.assertEqual(args["requested_by"], "analyst@example.com")
        self.assertEqual(args["closed_at"], "2026-03-04T05:06:07.123Z")
        self.assertIn("case INCIDENT-5 (alert 77)", run.text)

    def test_xsiam_parent_in_custom_fields(self):
        run = ScriptRun({"id": "78", "CustomFields": {"parentxdrincident": "INCIDENT-6"}}, platform=XSIAM)
        self.assertEqual(run.calls[0][1]["incident_id"], "INCIDENT-6")

    def test_xsiam_alert_without_case_fails_softly(self):
        run = ScriptRun({"id": "79"}, platform=XSIAM)
        self.assertEqual(run.calls, [])
        self.assertFalse(run.exited)
        self.assertTrue(run.entry["Note"])
        self.assertIn("no parent case", run.text)

    def test_options_passed_on(self):
        run = ScriptRun({"id": "1"}, {"wait": "true", "archive_timeout": "500", "using": "Case Archiver_prod"})
        args = run.calls[0][1]
        self.assertEqual(args["wait"], "true")
        self.assertEqual(args["timeout"], str(script.MAX_ARCHIVE_TIMEOUT))
        self.assertEqual(args["using"], "Case Archiver_prod")


class CloseArgsTest(unittest.TestCase):
    def test_empty_close_notes(self):
        for args in ({}, {"closeNotes": ""}, {"closeNotes": None, "closeReason": None},
                     {"closeNotes": "", "closeReason": ""}):
            with self.subTest(args=args):
                run = ScriptRun({"id": "9"}, args)
                self.assertEqual(len(run.calls), 1)
                self.assertFalse(run.exited)
                self.assertNotIn("Close notes", run.text)

    def test_close_notes_are_echoed(self):
        run = ScriptRun({"id": "9"}, {"closeNotes": "false positive", "closeReason": "Resolved"})
        self.assertIn("false positive", run.text)
        self.assertIn("Resolved", run.text)


class PolicyTest(unittest.TestCase):
    def test_failure_does_not_block_by_default(self):
        run = ScriptRun({"id": "5"}, {"closeNotes": ""}, execute=lambda c, a: ERR_ENTRY)
        self.assertFalse(run.exited)
        self.assertNotEqual(run.entry["Type"], EntryType.ERROR)
        self.assertTrue(run.entry["Note"])
        self.assertIn("FAILED", run.text)
        self.assertIn("HTTP 503", run.text)
        self.assertIn("close went ahead", run.text)
        self.assertIn("!case-archiver-archive-incident incident_id=5 reason=manual", run.text)

    def test_failure_blocks_when_asked(self):
        run = ScriptRun({"id": "5"}, {"block_close_on_failure": "true"}, execute=lambda c, a: ERR_ENTRY)
        self.assertTrue(run.exited)
        self.assertEqual(run.entry["Type"], EntryType.ERROR)
        self.assertIn("HTTP 503", run.entry["Contents"])
        self.assertIn("close was blocked", run.entry["Contents"])

    def test_success_never_blocks(self):
        run = ScriptRun({"id": "5"}, {"block_close_on_failure": "true"})
        self.assertFalse(run.exited)
        self.assertNotEqual(run.entry["Type"], EntryType.ERROR)

    def test_execute_command_exception(self):
        def boom(c, a):
            raise ValueError("Unsupported Command")
        run = ScriptRun({"id": "5"}, execute=boom)
        self.assertFalse(run.exited)
        self.assertIn("Unsupported Command", run.text)
        run = ScriptRun({"id": "5"}, {"block_close_on_failure": "true"}, execute=boom)
        self.assertTrue(run.exited)

    def test_failed_job_is_a_failure(self):
        failed = [{"Type": EntryType.NOTE, "Contents": dict(JOB, state="failed", error="bucket not writable")}]
        run = ScriptRun({"id": "5"}, {"block_close_on_failure": "true", "wait": "true"}, execute=lambda c, a: failed)
        self.assertTrue(run.exited)
        self.assertIn("bucket not writable", run.entry["Contents"])

    def test_bad_policy_value_means_no_block(self):
        run = ScriptRun({"id": "5"}, {"block_close_on_failure": "maybe"}, execute=lambda c, a: ERR_ENTRY)
        self.assertFalse(run.exited)


class WithIntegrationTest(unittest.TestCase):
    """The script calling the real integration code (in-process) against the fake server."""

    @classmethod
    def setUpClass(cls):
        if INTEGRATION not in sys.path:
            sys.path.insert(0, INTEGRATION)
        import CaseArchiver
        from fake_archiver import FakeArchiver, Fault
        cls.ca, cls.FakeArchiver, cls.Fault = CaseArchiver, FakeArchiver, Fault

    def setUp(self):
        self.fake = self.FakeArchiver(secret=SECRET).start()
        self.addCleanup(self.fake.stop)
        self.params = {"url": self.fake.url, "credentials": {"password": SECRET}, "timeout": "20"}

    def integration(self, command, cmd_args):
        """What executeCommand does: run the integration's main() for one command, return its entries."""
        out = []
        with mock.patch.object(demisto, "command", return_value=command), \
                mock.patch.object(demisto, "params", return_value=self.params), \
                mock.patch.object(demisto, "args", return_value=cmd_args), \
                mock.patch.object(demisto, "results", side_effect=out.append):
            try:
                self.ca.main()
            except SystemExit:
                pass
        return out

    def test_xsiam_close_end_to_end(self):
        run = ScriptRun({"id": "77", "parentXDRIncident": "INCIDENT-5"}, {"closeNotes": ""},
                        execute=self.integration, platform=XSIAM)
        self.assertFalse(run.exited)
        (req,) = self.fake.requests
        self.assertEqual(req.path, "/v1/incidents/5/archive")
        body = json.loads(req.body)
        self.assertEqual(body["reason"], "incident_closed")
        self.assertEqual(body["alert_id"], "77")
        (job,) = self.fake.jobs.values()
        self.assertIn(job["job_id"], run.text)

    def test_outage_does_not_block_and_is_bounded(self):
        self.fake.faults += [self.Fault(status=503) for _ in range(100)]
        t0 = time.monotonic()
        run = ScriptRun({"id": "3"}, {"archive_timeout": "2"}, execute=self.integration)
        self.assertLess(time.monotonic() - t0, 4)
        self.assertFalse(run.exited)
        self.assertIn("FAILED", run.text)
        self.assertTrue(re.search(r"HTTP 503|timeout", run.text), run.text)

    def test_hanging_server_is_bounded(self):
        self.fake.faults.append(self.Fault(delay=5.0, status=200))
        t0 = time.monotonic()
        run = ScriptRun({"id": "3"}, {"archive_timeout": "1", "block_close_on_failure": "true"},
                        execute=self.integration)
        self.assertLess(time.monotonic() - t0, 3)
        self.assertTrue(run.exited)
        self.assertEqual(run.entry["Type"], EntryType.ERROR)


if __name__ == "__main__":
    unittest.main()
