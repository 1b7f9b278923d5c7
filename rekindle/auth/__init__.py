"""Accounts: Auth0 access tokens on the API, the users they map to, and the browser login's admin hook."""
