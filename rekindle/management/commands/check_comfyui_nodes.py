"""Check every processing node: health, queue, and the preflight of each workflow; fail when a workflow cannot run.

One unit of work is one check of every node the configured engine uses (ComfyUI
nodes, the RunPod endpoint, or this machine for the local engine). It prints a line
per node and per workflow problem, then the summary; the exit code is non-zero when
some workflow that is checked passes its preflight on no healthy node, which is what a
monitoring cron wants to page on. By default the workflows the settings choose for
restore, preview and HD are checked; ``--workflow NAME`` (repeatable) or ``--all``
checks others. Reading health changes nothing, so two runs at once need no lock.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from rekindle.cron import CronCommand
from rekindle.engines.base import NodeHealth

KINDS = ("restore", "animate_preview", "animate_hd")
DRAIN_STATES = ("draining", "drained")


class Command(CronCommand):
    help = "Health and preflight of every processing node; exits non-zero when no node can run a workflow."
    default_interval = 300.0
    units_per_round = 1

    def add_cron_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--workflow",
            action="append",
            default=[],
            help="A workflow to check (repeatable; default: the ones configured for restore, preview and HD).",
        )
        parser.add_argument(
            "--all", dest="every_workflow", action="store_true", help="Check every workflow in the workflows folder."
        )

    def setup(self, *, workflow: list[str] | None = None, every_workflow: bool = False, **options: Any) -> None:
        from rekindle.workflows import all_workflows, get_workflow, workflow_name_for_kind

        if every_workflow:
            names = [w.name for w in all_workflows()]
        elif workflow:
            for name in workflow:
                try:
                    get_workflow(name)
                except KeyError:
                    raise CommandError(f"No workflow named {name!r}") from None
            names = list(dict.fromkeys(workflow))
        else:
            names = list(dict.fromkeys(workflow_name_for_kind(kind) for kind in KINDS))
        self.workflows = names
        self.nodes: list[NodeHealth] = []
        self.unrunnable: list[str] = []

    def handle_one(self) -> bool:
        from rekindle.engines import get_engine

        self.nodes = get_engine().health()
        for health in self.nodes:
            self.stdout.write(self.describe(health))
            for name in self.workflows:
                problems = health.preflight.get(name)
                if health.healthy and problems:
                    self.stdout.write(f"  {name}: {'; '.join(problems)}")
        self.unrunnable = [name for name in self.workflows if not self.runnable(name)]
        if self.unrunnable:
            self.failures += 1
            self.last_error = f"no node can run {', '.join(self.unrunnable)}"
        return True

    def runnable(self, workflow: str) -> bool:
        # A draining or drained node takes no new work: it does not count as able to run anything.
        return any(h.healthy and h.state not in DRAIN_STATES and h.preflight.get(workflow) == [] for h in self.nodes)

    @staticmethod
    def describe(health: NodeHealth) -> str:
        if not health.healthy:
            state = "DRAINING" if health.state == "draining" else "DOWN"
            return f"{state} {health.node}: {health.detail or 'not answering'}"
        last = f", last workflow {health.last_workflow}" if health.last_workflow else ""
        disk = f", disk {health.disk}" if health.disk else ""
        if health.state == "draining":
            return f"DRAINING {health.node}: {health.detail}; takes no new prompts{disk}"
        if health.state == "drained":
            return f"DRAINED {health.node}: nothing of ours left, takes no new prompts{disk}"
        return f"UP   {health.node}: queue {health.queue_length}{last}{disk}"

    def summary(self) -> str:
        healthy = sum(1 for h in self.nodes if h.healthy and h.state not in DRAIN_STATES)
        drained = sum(1 for h in self.nodes if h.state in DRAIN_STATES)
        text = f"{settings.REKINDLE_ENGINE} engine, {healthy} of {len(self.nodes)} node(s) healthy"
        if drained:
            text += f", {drained} draining or drained"
        if not self.unrunnable:
            text += f"; every checked workflow can run ({', '.join(self.workflows)})"
        return text
