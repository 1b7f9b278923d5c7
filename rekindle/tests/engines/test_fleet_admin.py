"""Draining a node from the staff console, and what the nodes page and check_comfyui_nodes then say."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from rekindle.engines.comfyui import get_pool
from rekindle.engines.comfyui import pool as pool_module
from rekindle.testing.comfyui_fixtures import StandinNode

pytestmark = pytest.mark.django_db


@pytest.fixture
def nodes(comfy_settings: list[StandinNode], monkeypatch: pytest.MonkeyPatch) -> list[StandinNode]:
    monkeypatch.setattr(pool_module, "_pool", None)
    return comfy_settings


def _staff(client: Client, *codenames: str) -> Client:
    user = User.objects.create_user("support", "support@example.com", "pw", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(user)
    return client


def test_it_drains_a_node_from_the_nodes_page_and_the_check_reports_it(
    nodes: list[StandinNode], client: Client
) -> None:
    staff = _staff(client, "view_restoreattempt", "change_restoreattempt")
    first, second = nodes

    response = staff.post(reverse("rekindle-admin-node-drain"), {"node": first.url, "drain": "1"})

    assert response.status_code == 302
    page = staff.get(reverse("rekindle-admin-nodes")).content.decode()
    assert '<span class="rk-status rk-status-succeeded">drained</span>' in page
    assert "Put back to work" in page
    assert "free of" in page  # the node's disk, from the files extension
    assert get_pool().scheduler.acquire("restore").url == second.url
    out = StringIO()
    call_command("check_comfyui_nodes", stdout=out)
    assert f"DRAINED {first.url}: nothing of ours left, takes no new prompts" in out.getvalue()
    assert "1 draining or drained" in out.getvalue()

    staff.post(reverse("rekindle-admin-node-drain"), {"node": first.url, "drain": "0"})
    assert get_pool().scheduler.view(first.url).state == "up"


def test_it_refuses_a_drain_without_the_permission_to_change_attempts(nodes: list[StandinNode], client: Client) -> None:
    staff = _staff(client, "view_restoreattempt")

    response = staff.post(reverse("rekindle-admin-node-drain"), {"node": nodes[0].url, "drain": "1"})

    assert response.status_code == 403
    assert not get_pool().scheduler.view(nodes[0].url).draining
    assert "Drain</button>" not in staff.get(reverse("rekindle-admin-nodes")).content.decode()


def test_it_says_so_when_the_node_to_drain_is_not_configured(nodes: list[StandinNode], client: Client) -> None:
    staff = _staff(client, "view_restoreattempt", "change_restoreattempt")

    response: Any = staff.post(reverse("rekindle-admin-node-drain"), {"node": "http://elsewhere:8188", "drain": "1"})

    assert response.status_code == 302
    page = staff.get(reverse("rekindle-admin-nodes")).content.decode()
    assert "No configured node is" in page
