"""`braid test`: run the WorkflowTest files beside workflows (`*.test.yaml`) on the engine's
virtual clock and say which cases pass, with a readable difference for each that does not."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from braid.api.errors import FieldError, InvalidSpecError, from_validation_error
from braid.api.manifests import parse_documents
from braid.api.workflow import Workflow
from braid.api.workflowtest import WorkflowTest
from braid.cli.output import OutputFormat
from braid.engine.validate import validate_manifests
from braid.engine.workflow_tests import run_case

err = Console(stderr=True, highlight=False)
if not err.is_terminal:
    err.width = max(err.width, 120)


def _test_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(path.rglob("*.test.yaml"))
        elif path.exists():
            out.append(path)
        else:
            err.print(f"[red]error[/]: {path}: no such file")
            raise typer.Exit(2)
    return out


def _load(path: Path) -> tuple[WorkflowTest, Workflow]:
    """The test file and the workflow it tests; InvalidSpecError naming what is wrong."""
    try:
        raw = yaml.safe_load(path.read_text())
        test = WorkflowTest.model_validate(raw)
    except yaml.YAMLError as exc:
        raise InvalidSpecError([FieldError("", f"not valid YAML: {exc}")]) from None
    except ValidationError as exc:
        raise from_validation_error(exc, "", WorkflowTest) from None
    target = (path.parent / test.spec.workflow).resolve()
    if not target.exists():
        raise InvalidSpecError([_error("spec.workflow", f"{test.spec.workflow}: no such file")])
    manifests = parse_documents(target.read_text())
    workflows = [m for m in manifests if isinstance(m, Workflow)]
    if not workflows:
        raise InvalidSpecError([_error("spec.workflow", f"{target} holds no Workflow")])
    errors = validate_manifests(workflows[:1])
    if errors:
        raise InvalidSpecError([_error(f"{target.name}: {e.path}", e.message) for e in errors])
    return test, workflows[0]


def _error(path: str, message: str) -> FieldError:
    return FieldError(path, message)


def _run_file(path: Path, text: bool, report: list[dict[str, Any]]) -> tuple[int, int] | None:
    """The file's cases, printed (text) and added to ``report``: (passed, failed), or None
    when the file is invalid (said)."""
    try:
        suite, workflow = _load(path)
    except InvalidSpecError as exc:
        for e in exc.errors:
            err.print(f"{path}: [red]error[/]: {escape(str(e))}", soft_wrap=True)
        return None
    name = suite.metadata.name or workflow.metadata.name or path.stem
    if text:
        err.print(f"[bold]{escape(str(path))}[/] ({escape(name)})")
    passed = failed = 0
    for case in suite.spec.cases:
        began = time.perf_counter()
        result = run_case(workflow.spec, case)
        took = (time.perf_counter() - began) * 1000
        passed += result.passed
        failed += not result.passed
        entry = {"file": str(path), "case": case.name, "passed": result.passed}
        report.append({**entry, "failures": result.failures, "ms": round(took, 1)})
        if text:
            mark = "[green]✓[/]" if result.passed else "[red]✗[/]"
            err.print(f"  {mark} {escape(case.name)} [dim]({took:.0f} ms)[/]")
            for failure in result.failures:
                err.print(f"      [red]{escape(failure)}[/]", soft_wrap=True)
    return passed, failed


def run_tests(
    paths: list[Path] = typer.Argument(
        None, help="Test files (*.test.yaml) or directories to find them in; default: ."
    ),
    output: OutputFormat = typer.Option(OutputFormat.TEXT, "--output", "-o", help="text or json"),
) -> None:
    """Run workflow tests: stubbed step results in, expected outcomes checked, on the engine's
    virtual clock (no processes, no cluster). Exit 1 when a case fails, 2 when a file is
    invalid."""
    files = _test_files(paths or [Path()])
    if not files:
        err.print("[yellow]no *.test.yaml files found[/]")
        raise typer.Exit(2)
    report: list[dict[str, Any]] = []
    passed = failed = 0
    invalid = False
    for path in files:
        counts = _run_file(path, output == OutputFormat.TEXT, report)
        if counts is None:
            invalid = True
            continue
        passed, failed = passed + counts[0], failed + counts[1]
    if output == OutputFormat.JSON:
        doc = {"passed": passed, "failed": failed, "cases": report}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        colour = "green" if not failed and not invalid else "red"
        err.print(f"[{colour}]{passed} passed, {failed} failed[/] in {len(files)} file(s)")
    if invalid:
        raise typer.Exit(2)
    raise typer.Exit(1 if failed else 0)


def register(app: typer.Typer) -> None:
    app.command(name="test")(run_tests)
