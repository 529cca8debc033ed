#!/usr/bin/env python3
"""Checks bote's OpenAPI document and real request/response bodies against it.

usage: openapi_check.py OPENAPI.json CHECKS.json
CHECKS.json: [{"kind": "request"|"response", "path": "/api/v1/…", "method": "post",
               "status": 201, "content_type": "application/json", "body": …}, …]
Prints one line per failure; exits 1 if any.
"""

import json
import sys

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate


def schema_for(doc, check):
    op = doc["paths"][check["path"]][check["method"]]
    if check["kind"] == "request":
        media = op["requestBody"]["content"]["application/json"]
    else:
        media = op["responses"][str(check["status"])]["content"][check["content_type"]]
    # Inside a root that carries the components, "#/components/…" references resolve.
    return dict(media["schema"], components=doc["components"])


def main():
    doc = json.load(open(sys.argv[1]))
    checks = json.load(open(sys.argv[2]))
    failures = []
    try:
        validate(doc)
    except Exception as e:  # the validator raises its own exception types
        failures.append(f"document: {e}".splitlines()[0])
    for check in checks:
        where = f"{check['kind']} {check['method'].upper()} {check['path']} {check.get('status', '')}"
        try:
            schema = schema_for(doc, check)
        except KeyError as e:
            failures.append(f"{where}: not in the document ({e})")
            continue
        for error in Draft202012Validator(schema).iter_errors(check["body"]):
            failures.append(f"{where}: {error.message} at {list(error.absolute_path)}")
    for f in failures:
        print(f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
