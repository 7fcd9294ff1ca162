"""Minimal stand-in for XSOAR's ``CommonServerPython`` (test support only, never shipped).

It implements only what the CaseArchiver pack uses, with the same names, signatures and entry
shapes as demisto/content's CommonServerPython, so code that runs against this stand-in runs in
XSOAR unchanged: EntryType, EntryFormat, DemistoException, argToBoolean, arg_to_number,
tableToMarkdown, CommandResults, return_results, return_error (exits with SystemExit like the real
one), isError / is_error, get_error.
"""
import json
import sys

import demistomock as demisto


class EntryType:
    NOTE = 1
    DOWNLOAD_AGENT = 2
    FILE = 3
    ERROR = 4
    PINNED = 5
    USER_MANAGEMENT = 6
    IMAGE = 7
    PLAYGROUND_ERROR = 8
    ENTRY_INFO_FILE = 9
    WARNING = 11
    MAP_ENTRY_TYPE = 15
    WIDGET = 17


class EntryFormat:
    HTML = "html"
    TABLE = "table"
    JSON = "json"
    TEXT = "text"
    DBOT_RESPONSE = "dbotCommandResponse"
    MARKDOWN = "markdown"


entryTypes = {"note": 1, "error": 4, "warning": 11}
formats = {"html": "html", "table": "table", "json": "json", "text": "text", "markdown": "markdown"}


class DemistoException(Exception):
    def __init__(self, message, exception=None, res=None, *args):
        self.res = res
        self.message = message
        self.exception = exception
        super().__init__(message, exception, *args)

    def __str__(self):
        return str(self.message)


def argToBoolean(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.lower() in ("true", "yes"):
            return True
        if value.lower() in ("false", "no"):
            return False
        raise ValueError("Argument does not contain a valid boolean-like value")
    raise ValueError("Argument is neither a string nor a boolean")


def arg_to_number(arg, arg_name=None, required=False):
    if arg is None or arg == "":
        if required:
            raise ValueError(f'Missing "{arg_name}"' if arg_name else "Missing required argument")
        return None
    if isinstance(arg, str):
        if arg.isdigit():
            return int(arg)
        try:
            return int(float(arg))
        except ValueError:
            raise ValueError(f'Invalid number: "{arg_name}"="{arg}"' if arg_name else f'"{arg}" is not a valid number')
    if isinstance(arg, (int, float)):
        return int(arg)
    raise ValueError(f'Invalid number: "{arg_name}"')


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value).replace("|", "\\|").replace("\n", "<br>")


def tableToMarkdown(name, t, headers=None, headerTransform=None, removeNull=False, metadata=None,
                    url_keys=None, date_fields=None, json_transform_mapping=None, is_auto_json_transform=False,
                    sort_headers=True):
    rows = [t] if isinstance(t, dict) else list(t or [])
    if isinstance(headers, str):
        headers = [headers]
    if not headers:
        headers = []
        for row in rows:
            for k in row:
                if k not in headers:
                    headers.append(k)
        if sort_headers:
            headers = sorted(headers)
    if removeNull:
        headers = [h for h in headers if any(row.get(h) not in (None, "", [], {}) for row in rows)]
    out = f"### {name}\n" if name else ""
    if metadata:
        out += metadata + "\n"
    if not rows or not headers:
        return out + "**No entries.**\n"
    shown = [headerTransform(h) if headerTransform else h for h in headers]
    out += "|" + "|".join(shown) + "|\n"
    out += "|" + "|".join("---" for _ in shown) + "|\n"
    for row in rows:
        out += "|" + "|".join(_cell(row.get(h)) for h in headers) + "|\n"
    return out


class CommandResults:
    def __init__(self, outputs_prefix=None, outputs_key_field=None, outputs=None, indicators=None,
                 readable_output=None, raw_response=None, indicators_timeline=None, indicator=None,
                 ignore_auto_extract=False, mark_as_note=False, scheduled_command=None, relationships=None,
                 entry_type=None, content_format=None, execution_metrics=None, replace_existing=False):
        self.outputs_prefix = outputs_prefix
        self.outputs_key_field = outputs_key_field
        self.outputs = outputs
        self.readable_output = readable_output
        self.raw_response = raw_response
        self.mark_as_note = mark_as_note
        self.entry_type = entry_type if entry_type is not None else EntryType.NOTE
        self.content_format = content_format

    def to_context(self):
        outputs = {}
        if self.outputs is not None and self.outputs_prefix:
            key = self.outputs_prefix
            fields = self.outputs_key_field
            if fields:
                if isinstance(fields, str):
                    fields = [fields]
                cond = " && ".join(f"val.{f} && val.{f} == obj.{f}" for f in fields)
                key = f"{self.outputs_prefix}({cond})"
            outputs[key] = self.outputs
        elif self.outputs is not None:
            outputs = self.outputs
        raw = self.raw_response if self.raw_response is not None else self.outputs
        human = self.readable_output
        if human is None and self.outputs is not None:
            human = tableToMarkdown("Results", self.outputs)
        fmt = self.content_format or (EntryFormat.JSON if isinstance(raw, (dict, list)) else EntryFormat.TEXT)
        return {
            "Type": self.entry_type,
            "ContentsFormat": fmt,
            "Contents": raw,
            "HumanReadable": human,
            "EntryContext": outputs,
            "IndicatorTimeline": [],
            "IgnoreAutoExtract": False,
            "Note": self.mark_as_note,
            "Relationships": [],
        }


def return_results(results):
    if results is None:
        return
    if isinstance(results, CommandResults):
        demisto.results(results.to_context())
    elif isinstance(results, list):
        for r in results:
            return_results(r)
    else:
        demisto.results(results)


def return_error(message, error="", outputs=None):
    demisto.error(str(message))
    if error:
        demisto.error(str(error))
    demisto.results({
        "Type": EntryType.ERROR,
        "ContentsFormat": EntryFormat.TEXT,
        "Contents": str(message),
        "EntryContext": outputs,
    })
    sys.exit(0)


def is_error(execute_command_result):
    if execute_command_result is None:
        return False
    if isinstance(execute_command_result, list):
        for entry in execute_command_result:
            if isinstance(entry, dict) and entry.get("Type") == EntryType.ERROR:
                return True
        return False
    return isinstance(execute_command_result, dict) and execute_command_result.get("Type") == EntryType.ERROR


isError = is_error


def get_error(execute_command_result):
    if not is_error(execute_command_result):
        raise ValueError("execute_command_result has no error entry. before using get_error use is_error")
    if isinstance(execute_command_result, dict):
        return execute_command_result["Contents"]
    return "\n".join(str(e["Contents"]) for e in execute_command_result
                     if isinstance(e, dict) and e.get("Type") == EntryType.ERROR)
