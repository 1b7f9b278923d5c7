"""The pages' server side: their headers, templates with no inline script, the email link, secrets kept out of logs.

What the pages do in a browser is in ``tests/browser/``.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core import mail, signing
from django.test import Client
from pytest_django.fixtures import Settings

from jobs.access import job_link_access
from jobs.notifications import job_link
from rekindle.log_redaction import RedactSecrets
from rekindle.testing.factories import JobFactory

TEMPLATES = Path(settings.BASE_DIR) / "templates"
PAGE_TEMPLATES = sorted((TEMPLATES / "pages").glob("*.html"))
ALL_TEMPLATES = sorted(TEMPLATES.rglob("*.html"))


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/j/00000000-0000-0000-0000-000000000000"])
def test_it_serves_the_pages_with_a_strict_policy_no_referer_and_no_shared_cache(path: str) -> None:
    response = Client().get(path)

    assert response.status_code == 200
    csp = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert "unsafe" not in response["Content-Security-Policy"]
    assert response["Referrer-Policy"] == "no-referrer"
    assert response["Cache-Control"] == "private, no-store"
    assert "csrftoken" in response.cookies


def test_it_lets_images_come_from_the_s3_endpoint(settings: Settings) -> None:
    settings.AWS_STORAGE_BUCKET_NAME = "photos"
    settings.AWS_S3_ENDPOINT_URL = "https://minio.example:9000"
    settings.AWS_S3_ADDRESSING_STYLE = "path"
    from rekindle.page_headers import content_security_policy

    policy = content_security_policy()
    assert "img-src 'self' https://minio.example:9000 blob: data:" in policy
    assert "media-src 'self' https://minio.example:9000" in policy


@pytest.mark.parametrize("template", ALL_TEMPLATES, ids=lambda path: str(path.relative_to(TEMPLATES)))
def test_it_has_no_inline_script_in_any_template(template: Path) -> None:
    html = template.read_text()

    scripts = re.findall(r"<script\b(.*?)>(.*?)</script>", html, flags=re.DOTALL)
    assert all(" src=" in attributes and not body.strip() for attributes, body in scripts), scripts
    assert re.findall(r"\son[a-z]+=", html) == [], "an inline event handler"


@pytest.mark.parametrize("template", PAGE_TEMPLATES, ids=lambda path: path.name)
def test_it_has_no_inline_style_in_any_page_template(template: Path) -> None:
    html = template.read_text()

    assert "<style" not in html
    assert re.findall(r"\sstyle=", html) == []
    assert re.findall(r"\son[a-z]+=", html) == [], "an inline event handler"


@pytest.mark.parametrize("template", PAGE_TEMPLATES, ids=lambda path: path.name)
def test_it_puts_a_csrf_token_in_every_form(template: Path) -> None:
    forms = re.findall(r"<form\b.*?</form>", template.read_text(), flags=re.DOTALL)
    assert all("{% csrf_token %}" in form for form in forms)


@pytest.mark.django_db
def test_it_tells_the_job_page_whether_the_email_link_is_valid_or_expired() -> None:
    job = JobFactory.create()

    def state(access: str) -> str:
        body = Client().get(f"/j/{job.pk}", {"access": access}).content.decode()
        found = re.search(r'data-link-state="([a-z]*)"', body)
        assert found is not None
        return found.group(1)

    class LongAgo(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - (settings.JOB_LINK_MAX_AGE_DAYS + 1) * 86400)

    expired = LongAgo(salt="rekindle.jobs.link-access").sign(str(job.pk)).split(":", 1)[1]
    assert state(job_link_access(job.pk)) == "valid"
    assert state(expired) == "expired"
    assert state(job_link_access(JobFactory.create().pk)) == "invalid"


@pytest.mark.django_db
def test_it_answers_a_malformed_job_address_with_a_page_that_says_so() -> None:
    response = Client().get("/j/not-a-job")

    assert response.status_code == 404
    assert 'data-job-id=""' in response.content.decode()


@pytest.mark.django_db
def test_it_says_payments_are_off_without_stripe_keys_or_a_checkout_route(settings: Settings) -> None:
    job = JobFactory.create()
    assert 'data-payments="off"' in Client().get(f"/j/{job.pk}").content.decode()
    settings.STRIPE_SECRET_KEY = "sk_test_page"
    assert 'data-payments="on"' in Client().get(f"/j/{job.pk}").content.decode()
    settings.ROOT_URLCONF = "jobs.page_urls"  # a server without the billing routes
    assert 'data-payments="off"' in Client().get(f"/j/{job.pk}").content.decode()


@pytest.mark.django_db
def test_it_links_emails_to_the_job_page_by_default() -> None:
    job = JobFactory.create()
    assert job_link(job) == f"{settings.SITE_URL}/j/{job.pk}?access={job_link_access(job.pk)}"


@pytest.mark.django_db
def test_it_emails_a_fresh_link_to_the_jobs_own_address_once_in_a_while() -> None:
    job = JobFactory.create(email="family@example.com")
    client = Client()

    for _ in range(3):
        response = client.post(f"/api/v1/jobs/{job.pk}/send-link")
        assert response.status_code == 202
    unknown = client.post("/api/v1/jobs/00000000-0000-0000-0000-000000000000/send-link")

    assert unknown.status_code == 202
    assert unknown.json() == response.json()  # says nothing about whether a job exists
    assert [message.to for message in mail.outbox] == [["family@example.com"]]
    assert f"/j/{job.pk}?access=" in str(mail.outbox[0].body)


@pytest.mark.django_db
@pytest.mark.parametrize("job_id", ["null,null", "not-a-job", "0" * 33])
def test_it_refuses_a_fresh_link_for_an_id_that_is_not_a_uuid(job_id: str) -> None:
    response = Client().post(f"/api/v1/jobs/{job_id}/send-link")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert mail.outbox == []


def test_it_keeps_access_values_and_tokens_out_of_access_logs() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/j/abc?access=SECRETVALUE&checkout=success", "1.1", 200),
        None,
    )
    RedactSecrets().filter(record)
    line = record.getMessage()
    assert "SECRETVALUE" not in line
    assert "/j/abc?access=[redacted]&checkout=success" in line

    other = logging.LogRecord("x", logging.INFO, __file__, 1, "GET /api/v1/jobs/1?token=T0KEN", None, None)
    RedactSecrets().filter(other)
    assert other.getMessage() == "GET /api/v1/jobs/1?token=[redacted]"


def test_it_filters_the_access_loggers_themselves() -> None:
    # gunicorn gives uvicorn's access logger handlers of its own: the filter sits on the logger.
    for name in ("uvicorn.access", "gunicorn.access", "django.server"):
        assert any(isinstance(f, RedactSecrets) for f in logging.getLogger(name).filters)


@pytest.mark.django_db
def test_it_points_the_admins_media_at_the_server_it_is_on_not_at_site_url(settings: Settings) -> None:
    # `PORT=18610 make run` with SITE_URL on port 8000: the admin's thumbnails follow the request.
    settings.SITE_URL = "http://127.0.0.1:8000"
    staff = User.objects.create_superuser("staff", "staff@example.com", "pw")
    job = JobFactory.create()
    client = Client(HTTP_HOST="127.0.0.1:18610")
    client.force_login(staff)

    body = client.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()

    assert (
        f'src="/media/{job.original_key}"' in body or f'src="http://127.0.0.1:18610/media/{job.original_key}"' in body
    )
    assert "127.0.0.1:8000" not in body
