"""Identity and access: principals, roles, API tokens, OIDC and secret encryption."""
