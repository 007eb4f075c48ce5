"""The local runtime: warm worker processes on this machine."""
