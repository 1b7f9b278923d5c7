from rekindle.testing.auth0 import auth0_tenant  # noqa: F401
