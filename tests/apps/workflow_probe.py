"""A worker app for ``tests/integration/test_workflows.py``: workflows on Kafka, probed.

The workflow behaviour ``probe`` runs the workflows of :mod:`tests.apps.workflow_definitions`
and any workflow *shape* a test draws (:mod:`stream_app.testing.workflows`): a start names it
``shape-<digest>``, and the workers build it from ``$WORKFLOW_PROBE_SHAPES/<name>.json``,
written by the test before it starts the run. So one worker serves every drawn shape, with the
very definition the local engine runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from stream_app import Runtime, Workflow, WorkflowBehaviour
from stream_app.testing.workflows import Shape, build_workflow
from tests.apps.workflow_definitions import chain, fan, flaky, rescued

SHAPE_PREFIX = "shape-"


class ProbeRuns(WorkflowBehaviour):
    """The probe's workflows, and the drawn shapes found in ``$WORKFLOW_PROBE_SHAPES``."""

    def workflow(self, name: str) -> Workflow:
        """The workflow ``name``; a shape's is built from its file on first use."""
        shapes = os.environ.get("WORKFLOW_PROBE_SHAPES")
        if name.startswith(SHAPE_PREFIX) and name not in self.workflows and shapes:
            path = Path(shapes) / f"{name}.json"
            if path.exists():
                self.workflows[name] = build_workflow(Shape.model_validate_json(path.read_text()))
        return super().workflow(name)


probe = ProbeRuns("probe", workflows=[chain, fan, flaky, rescued])

runtime = Runtime()
app = runtime.app
runtime.workflows(probe)
