"""Machine-readable, the same everywhere (issue 16, point 7): every ``--output json`` document is
one object whose ``schema`` names its shape and version, as docs/json.md describes it.

docs/json.md is the description both people and this test read: each schema's section has a field
table (``| `path` | type | meaning |``) and a real example. Real output is checked against the
table: every field it has is documented, with the documented type (and value, for a closed set),
and every documented field of an object is there unless the table says optional."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, Run, one_line_error
from tests.support.fleets import Fleet, web_member

DOC = Path(__file__).resolve().parents[2] / "docs" / "json.md"
CASE = "IR-2026-042"
OFFICE = "198.51.100.0/24"
ATTACKER, OTHER_ATTACKER = "203.0.113.7/32", "203.0.113.99/32"


# -- docs/json.md, read as a description ---------------------------------------------------------


@dataclass(frozen=True)
class Field:
    types: frozenset[str]
    values: frozenset[str] = frozenset()  # a closed set of values, when the table gives one
    optional: bool = False
    open: bool = False  # its content is not described field by field


@dataclass(frozen=True)
class Section:
    schema: str
    fields: dict[str, Field]
    example: Any


ROW = re.compile(r"^\| `(?P<path>[^`]+)` \| (?P<type>[^|]+?) \|")
HEADING = re.compile(r"^## `(?P<schema>ec2ir[.-][a-z-]+/\d+)`")
TYPE = re.compile(r"^(?P<types>[a-z]+(?: or [a-z]+)*)(?: \((?P<extra>.*)\))?$")
JSON_TYPES = {"string", "integer", "number", "boolean", "null", "array", "object"}


def parse_type(cell: str) -> Field:
    match = TYPE.match(cell.strip())
    assert match, f"docs/json.md: cannot read the type {cell!r}"
    types = frozenset(match["types"].split(" or "))
    assert types <= JSON_TYPES, cell
    values: frozenset[str] = frozenset()
    optional = is_open = False
    for part in (match["extra"] or "").split("; "):
        if part.startswith("one of: "):
            values = frozenset(value.strip() for value in part.removeprefix("one of: ").split(","))
        elif part == "optional":
            optional = True
        elif part == "any":
            is_open = True
        else:
            assert not part, f"docs/json.md: unknown type note {part!r} in {cell!r}"
    return Field(types, values, optional, is_open)


def sections() -> dict[str, Section]:
    found: dict[str, Section] = {}
    for chunk in re.split(r"^(?=## )", DOC.read_text(encoding="utf-8"), flags=re.M):
        heading = HEADING.match(chunk)
        if not heading:
            continue
        fields = {
            row["path"]: parse_type(row["type"])
            for row in (ROW.match(line) for line in chunk.splitlines())
            if row
        }
        example = re.search(r"```json\n(.*?)\n```", chunk, flags=re.S)
        assert example, f"docs/json.md: {heading['schema']} has no example"
        found[heading["schema"]] = Section(heading["schema"], fields, json.loads(example[1]))
    return found


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def problems(section: Section, document: Any) -> list[str]:
    """Everything in ``document`` that its section of docs/json.md does not describe."""
    walk = _DocumentWalk(section.fields)
    walk.visit(document, "")
    return walk.found


class _DocumentWalk:
    """One walk through a JSON document, collecting each way it differs from its section's fields."""

    def __init__(self, fields: dict[str, Field]) -> None:
        self.fields = fields
        self.found: list[str] = []

    def visit(self, value: Any, path: str) -> None:
        kind = json_type(value)
        if not self._described(value, path, kind):
            return
        if kind == "array":
            for item in value:
                self.visit(item, f"{path}[]")
        elif kind == "object":
            self._visit_object(value, path)

    def _described(self, value: Any, path: str, kind: str) -> bool:
        """Whether the value is as documented and its contents are worth a look (not an open field)."""
        if not path:
            if kind != "object":
                self.found.append(f"the document is {kind}, not an object")
                return False
            return True
        field = self.fields.get(path)
        if field is None:
            self.found.append(f"{path}: not documented")
            return False
        if kind not in field.types and not (kind == "integer" and "number" in field.types):
            self.found.append(f"{path}: {kind}, documented as {' or '.join(sorted(field.types))}")
            return False
        if field.values and value not in field.values:
            self.found.append(f"{path}: {value!r} is not one of {sorted(field.values)}")
        return not field.open

    def _visit_object(self, value: dict[str, Any], path: str) -> None:
        prefix = f"{path}." if path else ""
        if f"{prefix}*" in self.fields:  # a map: any key, each value as documented
            for item in value.values():
                self.visit(item, f"{prefix}*")
            return
        for key, item in value.items():
            self.visit(item, prefix + key)
        documented = {
            name.removeprefix(prefix)
            for name, field in self.fields.items()
            if name.startswith(prefix) and not field.optional
        }
        missing = {name for name in documented if re.fullmatch(r"[a-z0-9_]+", name)} - set(value)
        self.found.extend(f"{prefix}{name}: missing" for name in sorted(missing))


def check(result: Run, schema: str, codes: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """The command's one JSON document, checked against its schema's section of docs/json.md."""
    assert result.code in codes, (result.code, result.err)
    document = result.json()
    assert isinstance(document, dict), f"{schema}: the output is not an object"
    assert document.get("schema") == schema
    section = sections()[schema]
    assert problems(section, document) == []
    return document


def check_steps(document: dict[str, Any], planned: bool = False) -> None:
    """Each result's ``step_outcomes`` say what its ``steps`` say in words, one for each step."""
    prefixes = {
        "done: ": "done",
        "FAILED: ": "failed",
        "skipped: ": "skipped",
        "not collected: ": "not_collected",
        "not started: ": "not_started",
    }
    for result in document["results"]:
        outcomes = result["step_outcomes"]
        assert sorted(o["step"] for o in outcomes) == sorted(result["steps"])
        for outcome in outcomes:
            text = result["steps"][outcome["step"]]
            prefix = next((p for p in prefixes if text.startswith(p)), "")
            if prefix:
                assert (outcome["status"], outcome["detail"]) == (prefixes[prefix], text.removeprefix(prefix))
            elif text.startswith("nothing: ") and planned:
                assert (outcome["status"], outcome["detail"]) == ("skipped", text.removeprefix("nothing: "))
            else:
                assert planned and (outcome["status"], outcome["detail"]) == ("planned", text), outcome


# -- the commands, as a responder runs them ------------------------------------------------------


@pytest.mark.evidence
def test_every_command_prints_one_documented_object(run: Cli, fleet: Fleet) -> None:
    instance, _ = web_member(fleet)  # in an Auto Scaling group and a target group, with a profile
    [vpc] = fleet.subnets
    workstation = fleet.instance(vpc, [fleet.group(vpc, "forensic")])
    isolate = ("isolate", instance, "--case", CASE, "--office-cidr", OFFICE)

    plan = check(run(*isolate, "--dry-run", "--output", "json"), "ec2ir.plan/1")
    assert list(plan["instances"]) == [instance]

    isolated = check(run(*isolate, "--block-ip", ATTACKER, "--output", "json"), "ec2ir.run/1")
    assert isolated["action"] == "isolate" and isolated["ok"]
    check_steps(isolated)
    outcomes = {o["step"]: o["status"] for o in isolated["results"][0]["step_outcomes"]}
    assert outcomes["network"] == outcomes["snapshots"] == "done"

    status = check(run("status", "--output", "json"), "ec2ir.status/1")
    assert [hold["instance_id"] for hold in status["holds"]] == [instance]
    checked = check(run("status", "--check", "--output", "json"), "ec2ir.check/1")
    assert checked["ok"] and checked["checked"] == [instance]

    for verb in ("block-ip", "unblock-ip"):
        edge = check(run(verb, OTHER_ATTACKER, "--case", CASE, "--output", "json"), "ec2ir.edge/1")
        assert edge["action"] == verb and edge["changes"]

    verified = check(run("verify", CASE, "--output", "json"), "ec2ir.verify/1")
    assert verified["ok"] and verified["case_id"] == CASE and verified["findings"]
    report = check(run("report", CASE, "--output", "json"), "ec2ir-report/1")
    assert report["summary"]["case_id"] == CASE

    attached = check(
        run("forensics", "attach", CASE, "--to", workstation, "--output", "json"), "ec2ir.forensics-attach/1"
    )
    assert attached["ok"] and attached["copies"]
    detached = check(run("forensics", "detach", CASE, "--output", "json"), "ec2ir.forensics-detach/1")
    assert detached["ok"] and detached["copies"]

    release = ("release", instance, "--case", CASE)
    release_plan = check(run(*release, "--dry-run", "--output", "json"), "ec2ir.release-plan/1")
    assert release_plan["dry_run"] is True
    check_steps(release_plan, planned=True)
    assert {o["status"] for o in release_plan["results"][0]["step_outcomes"]} == {"planned"}

    released = check(run(*release, "--output", "json"), "ec2ir.run/1")
    assert released["action"] == "release" and released["ok"]
    check_steps(released)
    rejoined = check(run("rejoin", instance, "--case", CASE, "--output", "json"), "ec2ir.run/1")
    assert rejoined["action"] == "rejoin"
    check_steps(rejoined)
    collected = check(run("collect", CASE, instance, "--output", "json"), "ec2ir.run/1")
    assert collected["action"] == "collect"
    check_steps(collected)

    everything = check(run("status", "--all", "--output", "json"), "ec2ir.status/1")
    assert [hold["status"] for hold in everything["holds"]] == ["released"]
    preflight = check(run("preflight", "--output", "json"), "ec2ir.preflight/1")
    assert preflight["ok"] and preflight["caller"]


def test_a_failed_step_and_evidence_not_collected_are_structured(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])  # not managed by SSM: no memory

    collected = check(
        run("collect", CASE, instance, "--memory", "--memory-timeout", "5", "--output", "json"),
        "ec2ir.run/1",
        codes=(1,),
    )

    check_steps(collected)
    [memory] = [o for o in collected["results"][0]["step_outcomes"] if o["step"] == "memory"]
    assert memory["status"] == "not_collected" and memory["detail"]


def test_an_empty_status_is_an_object_too(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    assert run("collect", CASE, instance).code == 0  # the state table, and no hold

    assert check(run("status", "--output", "json"), "ec2ir.status/1")["holds"] == []


def test_report_output_json_means_format_json_and_refuses_another_format(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    assert run("collect", CASE, instance).code == 0

    as_output = run("report", CASE, "--output", "json")
    as_format = run("report", CASE, "--format", "json")
    both = run("report", CASE, "--format", "json", "--output", "json")
    markdown = run("report", CASE, "--output", "json", "--format", "md")
    never_built = run("report", "IR-404", "--output", "json", "--format", "html", "--table", "no-such-table")

    for result in (as_output, as_format, both):
        check(result, "ec2ir-report/1")
    assert json.loads(as_output.out)["timeline"] == json.loads(as_format.out)["timeline"]
    for refused in (markdown, never_built):  # refused before any work: no table, no case read
        assert (refused.code, refused.out) == (2, "")
        assert "--output json" in one_line_error(refused) and "--format" in refused.err
    assert run("report", CASE).out.startswith("#")  # Markdown stays the default of a table run


# -- docs/json.md itself ---------------------------------------------------------------------------


def test_every_schema_is_documented_with_an_example_that_fits_its_table() -> None:
    from ec2ir.render.terminal import Schema

    documented = sections()

    assert set(documented) == {schema.value for schema in Schema}
    for name, section in documented.items():
        assert section.example["schema"] == name
        assert problems(section, section.example) == [], name
        assert section.fields["schema"].values == {name}


def test_the_step_statuses_are_the_documented_closed_set() -> None:
    from ec2ir.core.outcomes import StepStatus

    run_section = sections()["ec2ir.run/1"]

    field = run_section.fields["results[].step_outcomes[].status"]
    assert field.values == {status.value for status in StepStatus}
