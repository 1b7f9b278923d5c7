"""The staff console's own adjustments to the admin site.

django-dramatiq registers a "Tasks" page that lists what its ``AdminMiddleware``
records; that middleware is not in our broker's middleware (attempts are our task
records, with their own pages), so the page would always be empty.
"""

from django.contrib import admin
from django_dramatiq.models import Task

if admin.site.is_registered(Task):
    admin.site.unregister(Task)
