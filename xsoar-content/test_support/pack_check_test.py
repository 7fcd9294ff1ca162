"""Structural checks of the CaseArchiver pack: every YAML parses and has the fields XSOAR requires,
the pack layout is complete, and the YAML agrees with the code (commands, arguments, closureScript).

Each check is a function returning a list of problems, and the mutation tests remove every required
field in turn and assert that the check notices, so a check cannot silently pass.
"""
import copy
import glob
import json
import os
import re
import sys
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)  # xsoar-content
PACK = os.path.join(ROOT, "Packs", "CaseArchiver")
INTEGRATION_DIR = os.path.join(PACK, "Integrations", "CaseArchiver")
SCRIPT_DIR = os.path.join(PACK, "Scripts", "ArchiveCaseOnClose")
EXAMPLES = os.path.normpath(os.path.join(ROOT, "..", "..", "shared", "reference", "xsoar-examples"))
for p in (HERE, INTEGRATION_DIR, SCRIPT_DIR):
    if p not in sys.path:
        sys.path.insert(0, p)

import miniyaml  # noqa: E402

DOCKER_RE = re.compile(r"^demisto/python3:\d+\.\d+\.\d+\.\d+$")
SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+$")
MARKETPLACES = {"xsoar", "xsoar_on_prem", "xsoar_saas", "marketplacev2", "xpanse"}
OUTPUT_TYPES = {"String", "Number", "Date", "Boolean", "Unknown"}
PARAM_TYPES = {0, 4, 8, 9, 12, 13, 15, 16}


def _get(doc, *path):
    for k in path:
        if not isinstance(doc, dict) or k not in doc:
            return None
        doc = doc[k]
    return doc


def _nonempty_str(v):
    return isinstance(v, str) and v.strip() != ""


def check_common(doc):
    problems = []
    if not isinstance(doc, dict):
        return ["document is not a mapping"]
    if not _nonempty_str(_get(doc, "commonfields", "id")):
        problems.append("commonfields.id missing")
    if _get(doc, "commonfields", "version") != -1:
        problems.append("commonfields.version must be -1")
    if not _nonempty_str(doc.get("name")):
        problems.append("name missing")
    if not (isinstance(doc.get("fromversion"), str) and SEMVER_RE.match(doc["fromversion"])):
        problems.append("fromversion missing or not x.y.z")
    mps = doc.get("marketplaces")
    if not (isinstance(mps, list) and mps and set(mps) <= MARKETPLACES):
        problems.append("marketplaces missing or unknown")
    return problems


def _check_args(args, where):
    problems = []
    if not isinstance(args, list):
        return [f"{where}: args/arguments missing"]
    names = set()
    for a in args:
        if not (isinstance(a, dict) and _nonempty_str(a.get("name")) and _nonempty_str(a.get("description"))):
            problems.append(f"{where}: every argument needs name and description: {a!r}")
            continue
        if a["name"] in names:
            problems.append(f"{where}: duplicate argument {a['name']}")
        names.add(a["name"])
        if a.get("auto") == "PREDEFINED" and not a.get("predefined"):
            problems.append(f"{where}: {a['name']} is PREDEFINED without values")
        if a.get("predefined") and "defaultValue" in a and str(a["defaultValue"]) not in map(str, a["predefined"]):
            problems.append(f"{where}: {a['name']} default is not one of its predefined values")
    return problems


def check_script(doc):
    problems = check_common(doc)
    if doc.get("type") != "python":
        problems.append("type must be python")
    if doc.get("subtype") != "python3":
        problems.append("subtype must be python3")
    if not (isinstance(doc.get("dockerimage"), str) and DOCKER_RE.match(doc["dockerimage"])):
        problems.append("dockerimage missing or not demisto/python3:<tag>")
    if doc.get("script") not in ("-", ""):
        problems.append("script must be '-' (code in the sibling .py)")
    tags = doc.get("tags")
    if not (isinstance(tags, list) and "post-processing" in tags):
        problems.append("tags must include post-processing")
    if not _nonempty_str(doc.get("comment")):
        problems.append("comment missing")
    if not (isinstance(doc.get("timeout"), str) and re.match(r"^\d+[smh]?$", doc["timeout"])):
        problems.append("timeout missing")
    problems += _check_args(doc.get("args"), "args")
    names = {a.get("name") for a in doc.get("args") or [] if isinstance(a, dict)}
    for required in ("closeReason", "closeNotes", "block_close_on_failure"):
        if required not in names:
            problems.append(f"args must declare {required}")
    return problems


def check_integration(doc):
    problems = check_common(doc)
    for k in ("display", "category", "description"):
        if not _nonempty_str(doc.get(k)):
            problems.append(f"{k} missing")
    conf = doc.get("configuration")
    params = {}
    if not isinstance(conf, list) or not conf:
        problems.append("configuration missing")
    else:
        for p in conf:
            if not (isinstance(p, dict) and _nonempty_str(p.get("name")) and p.get("type") in PARAM_TYPES
                    and (_nonempty_str(p.get("display")) or _nonempty_str(p.get("displaypassword")))):
                problems.append(f"configuration: every parameter needs name, type and display: {p!r}")
                continue
            params[p["name"]] = p
    for name, typ in (("url", 0), ("credentials", 9), ("insecure", 8), ("proxy", 8), ("timeout", 0)):
        if name not in params:
            problems.append(f"configuration: parameter {name} missing")
        elif params[name].get("type") != typ:
            problems.append(f"configuration: parameter {name} must be type {typ}")
    if "credentials" in params and params["credentials"].get("hiddenusername") is not True:
        problems.append("configuration: credentials must have hiddenusername: true")
    if "url" in params and params["url"].get("required") is not True:
        problems.append("configuration: url must be required")
    script = doc.get("script")
    if not isinstance(script, dict):
        return problems + ["script section missing"]
    if script.get("type") != "python":
        problems.append("script.type must be python")
    if script.get("subtype") != "python3":
        problems.append("script.subtype must be python3")
    if not (isinstance(script.get("dockerimage"), str) and DOCKER_RE.match(script["dockerimage"])):
        problems.append("script.dockerimage missing or not demisto/python3:<tag>")
    if script.get("script") not in ("-", ""):
        problems.append("script.script must be '-'")
    commands = script.get("commands")
    if not isinstance(commands, list) or not commands:
        return problems + ["script.commands missing"]
    for c in commands:
        if not (isinstance(c, dict) and _nonempty_str(c.get("name")) and _nonempty_str(c.get("description"))):
            problems.append(f"every command needs name and description: {c!r}")
            continue
        where = c["name"]
        problems += _check_args(c.get("arguments"), where)
        outputs = c.get("outputs")
        if not isinstance(outputs, list) or not outputs:
            problems.append(f"{where}: outputs missing")
            continue
        for o in outputs:
            if not (isinstance(o, dict) and isinstance(o.get("contextPath"), str)
                    and o["contextPath"].startswith("CaseArchiver.") and _nonempty_str(o.get("description"))
                    and o.get("type") in OUTPUT_TYPES):
                problems.append(f"{where}: every output needs a CaseArchiver.* contextPath, description, type: {o!r}")
    return problems


def check_pack_metadata(meta):
    problems = []
    for k in ("name", "description", "support", "author"):
        if not _nonempty_str(meta.get(k)):
            problems.append(f"pack_metadata: {k} missing")
    if not (isinstance(meta.get("currentVersion"), str) and SEMVER_RE.match(meta["currentVersion"])):
        problems.append("pack_metadata: currentVersion missing or not x.y.z")
    for k in ("categories", "keywords", "marketplaces"):
        if not (isinstance(meta.get(k), list) and meta[k]):
            problems.append(f"pack_metadata: {k} missing")
    for k in ("tags", "useCases"):
        if not isinstance(meta.get(k), list):
            problems.append(f"pack_metadata: {k} missing")
    if not set(meta.get("marketplaces") or []) <= MARKETPLACES:
        problems.append("pack_metadata: unknown marketplace")
    return problems


def check_incident_type(doc, script_ids):
    problems = []
    for k in ("id", "name"):
        if not _nonempty_str(doc.get(k)):
            problems.append(f"incident type: {k} missing")
    if doc.get("version") != -1:
        problems.append("incident type: version must be -1")
    if doc.get("closureScript") not in script_ids:
        problems.append(f"incident type: closureScript {doc.get('closureScript')!r} is not a script of the pack")
    if not (isinstance(doc.get("fromVersion"), str) and SEMVER_RE.match(doc["fromVersion"])):
        problems.append("incident type: fromVersion missing")
    return problems


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def pack_ymls():
    return sorted(glob.glob(os.path.join(PACK, "**", "*.yml"), recursive=True))


def load_integration():
    return miniyaml.load_file(os.path.join(INTEGRATION_DIR, "CaseArchiver.yml"))


def load_script():
    return miniyaml.load_file(os.path.join(SCRIPT_DIR, "ArchiveCaseOnClose.yml"))


def _delete(doc, path):
    """Deletes doc[path...]; a path element '*' means every list item. Returns False if nothing to delete."""
    head, rest = path[0], path[1:]
    if head == "*":
        return any([_delete(item, rest) for item in doc]) if isinstance(doc, list) else False
    if not isinstance(doc, dict) or head not in doc:
        return False
    if not rest:
        del doc[head]
        return True
    return _delete(doc[head], rest)


def _remove_item(doc, path, key, value):
    """Removes the list items at doc[path] whose item[key] == value (or == value when key is None)."""
    lst = doc
    for k in path:
        lst = lst[k]
    before = len(lst)
    lst[:] = [x for x in lst if (x.get(key) if key else x) != value]
    return len(lst) < before


SCRIPT_REQUIRED = [("commonfields", "id"), ("commonfields", "version"), ("name",), ("type",), ("subtype",),
                   ("dockerimage",), ("tags",), ("args",), ("script",), ("comment",), ("timeout",),
                   ("fromversion",), ("marketplaces",), ("args", "*", "description")]
INTEGRATION_REQUIRED = [("commonfields", "id"), ("commonfields", "version"), ("name",), ("display",),
                        ("category",), ("description",), ("configuration",), ("script",), ("fromversion",),
                        ("script", "type"), ("script", "subtype"), ("script", "dockerimage"), ("script", "script"),
                        ("script", "commands"), ("script", "commands", "*", "outputs"),
                        ("script", "commands", "*", "arguments"), ("script", "commands", "*", "description"),
                        ("script", "commands", "*", "outputs", "*", "type"),
                        ("configuration", "*", "type"), ("configuration", "*", "name")]


class YamlFilesTest(unittest.TestCase):
    def test_every_yaml_parses_and_is_known(self):
        ymls = pack_ymls()
        self.assertEqual(len(ymls), 2, ymls)
        for path in ymls:
            with self.subTest(path=os.path.relpath(path, ROOT)):
                doc = miniyaml.load_file(path)
                rel = os.path.relpath(path, PACK).split(os.sep)
                self.assertIn(rel[0], ("Integrations", "Scripts"))
                self.assertEqual(rel[2], rel[1] + ".yml", "the YAML is named after its directory")
                problems = check_integration(doc) if rel[0] == "Integrations" else check_script(doc)
                self.assertEqual(problems, [])

    def test_script_checks_catch_each_missing_field(self):
        good = load_script()
        for path in SCRIPT_REQUIRED:
            with self.subTest(path=path):
                doc = copy.deepcopy(good)
                self.assertTrue(_delete(doc, list(path)))
                self.assertNotEqual(check_script(doc), [])

    def test_script_checks_catch_wrong_values(self):
        good = load_script()
        for key, value in (("type", "javascript"), ("subtype", "python2"), ("dockerimage", "python:3.12"),
                           ("tags", ["training"]), ("script", "print(1)")):
            with self.subTest(key=key):
                doc = copy.deepcopy(good)
                doc[key] = value
                self.assertNotEqual(check_script(doc), [])
        for arg in ("closeReason", "closeNotes", "block_close_on_failure"):
            with self.subTest(arg=arg):
                doc = copy.deepcopy(good)
                self.assertTrue(_remove_item(doc, ["args"], "name", arg))
                self.assertNotEqual(check_script(doc), [])

    def test_integration_checks_catch_each_missing_field(self):
        good = load_integration()
        for path in INTEGRATION_REQUIRED:
            with self.subTest(path=path):
                doc = copy.deepcopy(good)
                self.assertTrue(_delete(doc, list(path)))
                self.assertNotEqual(check_integration(doc), [])
        for param in ("url", "credentials", "insecure", "proxy", "timeout"):
            with self.subTest(param=param):
                doc = copy.deepcopy(good)
                self.assertTrue(_remove_item(doc, ["configuration"], "name", param))
                self.assertNotEqual(check_integration(doc), [])
        doc = copy.deepcopy(good)
        next(p for p in doc["configuration"] if p["name"] == "credentials")["hiddenusername"] = False
        self.assertNotEqual(check_integration(doc), [])


class ConsistencyTest(unittest.TestCase):
    def test_integration_commands_match_code(self):
        import CaseArchiver
        names = {c["name"] for c in load_integration()["script"]["commands"]}
        self.assertEqual(names, set(CaseArchiver.COMMANDS))

    def test_integration_arguments_cover_what_the_code_reads(self):
        import CaseArchiver
        src = _read(os.path.join(INTEGRATION_DIR, "CaseArchiver.py"))
        for command in load_integration()["script"]["commands"]:
            fn = CaseArchiver.COMMANDS[command["name"]].__name__
            body = src.split(f"def {fn}(", 1)[1].split("\ndef ", 1)[0]
            read = set(re.findall(r'args\.get\("([a-z_]+)"', body))
            declared = {a["name"] for a in command["arguments"]}
            with self.subTest(command=command["name"]):
                self.assertTrue(read, "the parser of the code found no arguments")
                self.assertLessEqual(read, declared)

    def test_integration_params_match_code(self):
        src = _read(os.path.join(INTEGRATION_DIR, "CaseArchiver.py"))
        read = set(re.findall(r'params\.get\("([a-z_]+)"', src))
        declared = {p["name"] for p in load_integration()["configuration"]}
        self.assertEqual(read, declared)

    def test_script_arguments_cover_what_the_code_reads(self):
        src = _read(os.path.join(SCRIPT_DIR, "ArchiveCaseOnClose.py"))
        read = set(re.findall(r'(?<![\w.])args\.get\("([A-Za-z_]+)"', src))
        read |= set(re.findall(r'(?<![\w.])args\["([A-Za-z_]+)"\]', src))
        declared = {a["name"] for a in load_script()["args"]}
        self.assertTrue(read)
        self.assertLessEqual(read, declared)

    def test_script_calls_the_integration_with_declared_arguments(self):
        import demistomock as demisto
        import ArchiveCaseOnClose
        calls = []
        with mock.patch.object(demisto, "incident", return_value={"id": "1", "parentXDRIncident": "INCIDENT-2",
                                                                  "closingUserId": "u"}), \
                mock.patch.object(demisto, "args", return_value={"using": "inst", "wait": "true"}), \
                mock.patch.object(demisto, "executeCommand", side_effect=lambda c, a: calls.append((c, a)) or []), \
                mock.patch.object(demisto, "results"):
            ArchiveCaseOnClose.main()
        ((command, args),) = calls
        declared = {c["name"]: {a["name"] for a in c["arguments"]} for c in load_integration()["script"]["commands"]}
        self.assertIn(command, declared)
        self.assertLessEqual(set(args) - {"using"}, declared[command])

    def test_script_timeout_exceeds_archive_budget(self):
        import ArchiveCaseOnClose
        timeout = load_script()["timeout"]
        seconds = int(timeout.rstrip("s"))
        self.assertGreater(seconds, ArchiveCaseOnClose.MAX_ARCHIVE_TIMEOUT)

    def test_layout(self):
        for d, files in ((INTEGRATION_DIR, ["CaseArchiver.py", "CaseArchiver.yml", "CaseArchiver_test.py",
                                            "README.md", "CaseArchiver_description.md"]),
                         (SCRIPT_DIR, ["ArchiveCaseOnClose.py", "ArchiveCaseOnClose.yml",
                                       "ArchiveCaseOnClose_test.py", "README.md"]),
                         (PACK, ["pack_metadata.json", "README.md"])):
            for f in files:
                with self.subTest(file=f):
                    self.assertTrue(os.path.isfile(os.path.join(d, f)), f)
        stray = [p for p in glob.glob(os.path.join(PACK, "**", "*"), recursive=True)
                 if os.path.basename(p) in ("demistomock.py", "CommonServerPython.py")]
        self.assertEqual(stray, [], "test stand-ins must not be shipped in the pack")

    def test_pack_metadata(self):
        with open(os.path.join(PACK, "pack_metadata.json"), encoding="utf-8") as f:
            meta = json.load(f)
        self.assertEqual(check_pack_metadata(meta), [])
        for k in ("name", "currentVersion", "marketplaces"):
            with self.subTest(missing=k):
                self.assertNotEqual(check_pack_metadata({x: v for x, v in meta.items() if x != k}), [])

    def test_incident_types(self):
        script_ids = {load_script()["commonfields"]["id"]}
        paths = glob.glob(os.path.join(PACK, "IncidentTypes", "*.json"))
        self.assertTrue(paths)
        for path in paths:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            with self.subTest(path=os.path.basename(path)):
                self.assertEqual(check_incident_type(doc, script_ids), [])
                self.assertNotEqual(check_incident_type(dict(doc, closureScript="Other"), script_ids), [])


class MiniYamlTest(unittest.TestCase):
    def test_subset(self):
        doc = miniyaml.loads(
            "# comment\n"
            "a: 1\n"
            "b: -1\n"
            "c: 'x: y'\n"
            "d: \"q\\n\"\n"
            "e:\n"
            "- one\n"
            "- k: v\n"
            "  k2: true\n"
            "- []\n"
            "f:\n"
            "  g: null\n"
            "  h: 6.10.0\n"
            "  i: it''s\n"
            "j: 'it''s'\n"
            "k:\n")
        self.assertEqual(doc, {"a": 1, "b": -1, "c": "x: y", "d": "q\n", "e": ["one", {"k": "v", "k2": True}, []],
                               "f": {"g": None, "h": "6.10.0", "i": "it''s"}, "j": "it's", "k": None})

    def test_rejects_what_it_does_not_understand(self):
        for bad in ("a: |\n  text\n", "a: >\n  text\n", "a: &x 1\n", "a: *x\n", "a: [1, 2]\n", "a: {b: 1}\n",
                    "a: b: c\n", "a: yes\n", "a: 1 # c\n", "a: 1\na: 2\n", "a:\n\t- 1\n", "a: 'open\n",
                    "a: 1\n  b: 2\n", "- a\nb: 1\n", "a: 'it's'\n"):
            with self.subTest(bad=bad), self.assertRaises(miniyaml.YamlError):
                miniyaml.loads(bad)

    @unittest.skipUnless(os.path.isdir(EXAMPLES), "shared/reference/xsoar-examples not present")
    def test_reads_real_content_examples(self):
        gra = miniyaml.load_file(os.path.join(EXAMPLES, "GRAUpdateAlertStatus.yml"))
        self.assertEqual(gra["tags"], ["post-processing"])
        self.assertEqual(gra["commonfields"], {"id": "GRAUpdateAlertStatus", "version": -1})
        teams = miniyaml.load_file(os.path.join(EXAMPLES, "MicrosoftTeamsWebhook.yml"))
        self.assertEqual(teams["script"]["commands"][0]["name"], "ms-teams-message")
        self.assertEqual(teams["script"]["subtype"], "python3")


if __name__ == "__main__":
    unittest.main()
