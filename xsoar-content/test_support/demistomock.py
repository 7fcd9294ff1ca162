"""Minimal stand-in for XSOAR's ``demistomock`` module (test support only, never shipped).

Only the functions the CaseArchiver pack uses exist. Each returns an empty default; tests replace
them with ``unittest.mock.patch.object(demisto, "<name>", ...)`` exactly as they would patch the real
demistomock from demisto/content, so the pack's tests also run against the real one.
"""

_LOG = []  # (level, message) pairs, handy when debugging a test


def params():
    return {}


def args():
    return {}


def command():
    return ""


def incident():
    return {}


def incidents():
    return [incident()]


def demistoVersion():
    return {"version": "8.9.0", "buildNumber": "0", "platform": "xsoar"}


def results(entry):
    return None


def executeCommand(command, args):
    return [{"Type": 4, "ContentsFormat": "text", "Contents": f"Unsupported Command: {command}"}]


def info(msg, *rest):
    _LOG.append(("info", str(msg)))


def debug(msg, *rest):
    _LOG.append(("debug", str(msg)))


def error(msg, *rest):
    _LOG.append(("error", str(msg)))


def log(msg):
    _LOG.append(("log", str(msg)))
