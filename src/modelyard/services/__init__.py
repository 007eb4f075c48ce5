"""Services: the platform's use cases, called by the API and the CLI.

Each service method authorizes the caller, works through repositories, records the
mutation in the audit log in the same transaction, and raises typed errors.
"""
